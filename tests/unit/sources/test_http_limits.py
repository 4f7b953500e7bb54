"""Upstream answers are bounded: in size and, for a whole fetch, in time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest

from papermail.sources.hf import fetch_daily
from papermail.sources.http import Budget, DeadlineExceeded, ResponseTooLarge

DAY = dt.date(2026, 11, 26)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fetch(handler, budget: Budget, **kwargs: object):  # type: ignore[no-untyped-def]
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        return fetch_daily(
            client,
            day=DAY,
            base_url="https://hf.test",
            budget=budget,
            sleep=lambda _s: None,
            **kwargs,
        )  # type: ignore[arg-type]


def test_an_endless_body_stops_at_the_size_cap_without_reading_it_all() -> None:
    produced: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            produced.append(1)
            yield b"[" + b" " * 65_535

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Gen(endless()))

    with pytest.raises(ResponseTooLarge, match="more than 1,048,576 bytes"):
        fetch(handler, Budget(max_bytes=1024 * 1024))
    assert len(produced) <= 17  # 16 chunks of 64 KiB reach the cap; nothing much beyond


def test_an_announced_oversize_answer_is_refused_before_reading() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"Content-Length": str(200 * 1024 * 1024)}, content=b"[]"
        )

    with pytest.raises(ResponseTooLarge, match="announced 209,715,200 bytes"):
        fetch(handler, Budget(max_bytes=1024 * 1024))


def test_a_trickling_body_stops_at_the_fetch_deadline() -> None:
    clock = FakeClock()

    def trickle() -> Iterator[bytes]:
        while True:
            clock.now += 3.0  # one byte every three seconds, each read within any timeout
            yield b" "

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Gen(trickle()))

    with pytest.raises(DeadlineExceeded, match="60 s fetch deadline"):
        fetch(handler, Budget(seconds=60, clock=clock))
    assert clock.now <= 63


def test_retries_stop_when_the_deadline_leaves_no_room() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        clock.now += 25.0
        return httpx.Response(503, content=b"busy")

    with pytest.raises(DeadlineExceeded, match="no time for another attempt"):
        fetch(handler, Budget(seconds=60, clock=clock), retries=10, backoff_seconds=20)
    assert len(calls) < 11


def test_a_normal_page_passes_through_with_its_json_intact() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[], headers={"Content-Encoding": "identity"})

    assert fetch(handler, Budget()).papers == []


class _Gen(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
