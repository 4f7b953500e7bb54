"""papermail: the day's trending research papers, delivered by email exactly once."""

__version__ = "0.1.0"
