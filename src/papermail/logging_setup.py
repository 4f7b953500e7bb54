"""Logging for every papermail process: one line per event, JSON when configured.

Ids that say what a line is about (edition_id, batch_id, delivery_id, subscriber_id)
come from two places: ``extra={...}`` on one call, or ``log_context(...)`` for every
line logged inside a block, in this thread or asyncio task::

    with log_context(edition_id=edition.id, batch_id=task_id):
        log.info("batch claimed %d rows", n)          # carries both ids
        log.warning("bounced", extra={"delivery_id": 7, "subscriber_id": 3})

A filter on the handler copies the bound ids onto each record, so loggers of
libraries (SQLAlchemy, Celery) carry them too.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import IO, Any

# An immutable default: every log_context() sets a new mapping, none is ever mutated.
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "papermail_log_context", default=MappingProxyType({})
)
# Attributes every LogRecord has; anything else on a record came from extra= or context.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
HANDLER_NAME = "papermail"


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Bind ids to every log line emitted inside the block (nested blocks add to it)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_CONTEXT.get())


class ContextFilter(logging.Filter):
    """Copies bound ids onto each record; an explicit extra= wins over the context."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then every bound id or extra."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual human line, with bound ids appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _fields(record)
        if not extra:
            return line
        first, newline, rest = line.partition("\n")  # keep ids on the message's own line
        pairs = " ".join(f"{k}={v}" for k, v in sorted(extra.items()))
        return f"{first} [{pairs}]{newline}{rest}"


def configure_logging(
    *, json: bool, level: str | int = "INFO", stream: IO[str] | None = None
) -> logging.Handler:
    """Install papermail's handler on the root logger, replacing any earlier one.

    Safe to call more than once (CLI start, Celery's setup_logging signal, tests).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
