"""Dates in words, the same in emails and on pages.

Spelled out rather than strftime("%A %B"): output must not depend on a process's locale.
"""

from __future__ import annotations

import datetime as dt

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def day_month_year(day: dt.date) -> str:
    """'27 November 2026'."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def long_date(day: dt.date) -> str:
    """'Friday, 27 November 2026'."""
    return f"{WEEKDAYS[day.weekday()]}, {day_month_year(day)}"


def short_date(day: dt.date) -> str:
    """'27 Nov'."""
    return f"{day.day} {MONTHS[day.month - 1][:3]}"


def edition_heading(day: dt.date, kind: str) -> str:
    """How an edition is named: its day, or the week it starts."""
    if kind == "weekly":
        return f"Week of {day_month_year(day)}"
    return long_date(day)
