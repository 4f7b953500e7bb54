"""Recorded HTTP answers for the sources' tests: an httpx.MockTransport handler."""

from __future__ import annotations

import httpx

Reply = httpx.Response | type[httpx.TransportError]


class Replay:
    """Answers requests with queued replies, in order, and remembers the requests.

    A reply that is a TransportError class is raised instead (a network failure)."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request {request.url}")
        reply = self.replies.pop(0)
        if isinstance(reply, type):
            raise reply("simulated network failure", request=request)
        return reply

    def param(self, name: str) -> list[str]:
        """One query parameter of every request so far, in order."""
        return [r.url.params[name] for r in self.requests]
