"""The ``papermail`` command line: one module per group of commands (see main.py)."""
