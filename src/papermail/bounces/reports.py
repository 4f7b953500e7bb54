"""What a bounce or complaint says, whatever brought it: one ``Report`` per recipient.

Readers of each form (``dsn`` for raw messages, ``sns`` for Amazon SES, ``postmark``)
turn what they were given into reports or raise ``Refused``; the processor does the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from papermail.models import BounceKind

# Our Message-IDs (pipeline/messages.py): <papermail.e{edition}.d{delivery}[.r{hex}]@domain>.
OUR_MESSAGE_ID = re.compile(
    r"<?papermail\.e([0-9]{1,18})\.d([0-9]{1,18})(?:\.r[0-9a-f]{1,32})?@([A-Za-z0-9.-]{1,253})>?"
)
# Worst first: a report with several findings acts on the worst.
SEVERITY = {BounceKind.COMPLAINT: 0, BounceKind.HARD: 1, BounceKind.SOFT: 2}


class Refused(Exception):
    """A bounce, complaint or webhook we will not act on; ``reason`` says why. Nothing was
    changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Report:
    """One recipient's bounce or complaint, as the report gives it."""

    kind: BounceKind
    recipient: str | None  # the address that bounced or complained, if the report says
    status: str | None = None  # enhanced status code, "5.1.1"
    diagnostic: str | None = None  # the server's words
    message_id: str | None = None  # the Message-ID of the message that bounced, if quoted
    reference: str | None = None  # the report's own id (a webhook's event id)


def kind_of_status(status: str | None) -> BounceKind | None:
    """5.x.x hard, 4.x.x soft, anything else (2.x.x, nothing) not a bounce."""
    if status and status[0] == "5":
        return BounceKind.HARD
    if status and status[0] == "4":
        return BounceKind.SOFT
    return None


def delivery_in_message_id(message_id: str | None, *, domain: str) -> int | None:
    """The delivery id in one of our Message-IDs at ``domain``, else None."""
    match = OUR_MESSAGE_ID.fullmatch((message_id or "").strip())
    if match is None or match[3].lower() != domain.lower():
        return None
    return int(match[2])


def worst(reports: list[Report]) -> Report:
    return min(reports, key=lambda r: SEVERITY[r.kind])
