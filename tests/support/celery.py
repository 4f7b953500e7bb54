"""A stand-in for the Celery app where monitoring and operator actions need one."""

from __future__ import annotations


class _Inspect:
    def __init__(self, replies: dict[str, object] | None) -> None:
        self.replies = replies

    def ping(self) -> dict[str, object] | None:
        return self.replies


class FakeCelery:
    """Enough of a Celery app for monitoring and the ops pages: control.inspect().ping(),
    send_task() and conf.redbeat_lock_timeout."""

    def __init__(self, workers: tuple[str, ...] = ("w1@host",)) -> None:
        self.workers = workers
        self.sent: list[tuple[str, list[object]]] = []
        self.timeouts: list[float] = []
        self.control = self
        self.conf = type("Conf", (), {"redbeat_lock_timeout": 150})()

    def inspect(self, timeout: float) -> _Inspect:
        self.timeouts.append(timeout)
        return _Inspect({name: {"ok": "pong"} for name in self.workers} or None)

    def send_task(self, name: str, args: list[object] | None = None, **_: object) -> object:
        self.sent.append((name, list(args or [])))
        return type("Result", (), {"id": f"task-{len(self.sent)}"})()
