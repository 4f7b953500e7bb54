"""Celery app and tasks: thin shells over papermail's domain functions."""
