"""Bounded HTTP reads for upstream APIs: a size cap and an overall deadline.

A client timeout bounds each socket read, not a response: a server that trickles one
byte every few seconds, or answers with hundreds of megabytes, would otherwise hold a
worker (and its memory) for as long as it likes. Every source reads through here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from papermail.sources.base import SourceError, clean_line

MAX_DELAY_SECONDS = 60.0  # neither a Retry-After nor the backoff may stall a worker longer
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a day of papers is ~1 MB; 16x that is not an API page
FETCH_DEADLINE_SECONDS = 300.0  # a whole fetch (every page, every retry)

# Headers that describe the bytes on the wire, not the decoded body we keep.
_WIRE_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


class ResponseTooLarge(SourceError):
    """The answer is bigger than any page of the API we expect."""


class DeadlineExceeded(SourceError):
    """The fetch ran past its overall deadline (a stalled or trickling server)."""


@dataclass
class Budget:
    """What one fetch may spend: bytes per response and time overall."""

    max_bytes: int = MAX_RESPONSE_BYTES
    seconds: float = FETCH_DEADLINE_SECONDS
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.seconds <= 0:
            raise ValueError("max_bytes and seconds must be positive")
        if self.started < 0:
            self.started = self.clock()

    @property
    def remaining(self) -> float:
        return self.started + self.seconds - self.clock()

    def check_time(self, what: str) -> None:
        if self.remaining <= 0:
            raise DeadlineExceeded(f"{what}: gave up at the {self.seconds:.0f} s fetch deadline")


def bounded_get(
    client: httpx.Client, url: str, *, params: dict[str, str | int], budget: Budget, shown: str
) -> httpx.Response:
    """GET ``url`` and read at most ``budget.max_bytes`` of body before the deadline.

    Transport errors propagate as httpx raises them (the caller decides on retries);
    an oversized or overdue body raises ResponseTooLarge / DeadlineExceeded, which
    are not worth retrying.
    """
    budget.check_time(f"GET {shown}")
    with client.stream("GET", url, params=params) as response:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > budget.max_bytes:
            raise ResponseTooLarge(
                f"GET {shown} announced {int(declared):,} bytes; the limit is {budget.max_bytes:,}"
            )
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > budget.max_bytes:
                raise ResponseTooLarge(
                    f"GET {shown} sent more than {budget.max_bytes:,} bytes; stopped reading"
                )
            budget.check_time(f"GET {shown}")
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _WIRE_HEADERS]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=bytes(body),
        request=response.request,
        extensions={"reason_phrase": response.reason_phrase.encode("ascii", "replace")},
    )


def is_absolute_http(url: str) -> bool:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return parsed.scheme in {"http", "https"} and bool(parsed.host)


def backoff(attempt: int, base: float) -> float:
    """Exponential with "equal jitter": at least half the step, so retries do spread out,
    and random in the other half, so many workers do not retry in lockstep."""
    step = min(MAX_DELAY_SECONDS, base * 2**attempt)
    return step / 2 + random.uniform(0, step / 2)


def retry_after(response: httpx.Response) -> float | None:
    """The seconds form of Retry-After, capped; the HTTP-date form falls back to backoff."""
    value = response.headers.get("Retry-After", "").strip()
    if not value.isdigit():
        return None
    return min(float(value), MAX_DELAY_SECONDS)


def excerpt(response: httpx.Response, limit: int = 160) -> str:
    """A short, clean, quoted start of a body for an error message."""
    text = clean_line(response.text[: limit * 4])  # an error page can be megabytes
    return repr(text if len(text) <= limit else text[:limit] + "...")
