"""Operator switches kept in Redis, read by every worker."""

from __future__ import annotations

import datetime as dt

import redis

PAUSE_KEY = "papermail:control:paused"


def pause_sending(client: redis.Redis, *, reason: str = "", now: dt.datetime) -> None:
    client.set(PAUSE_KEY, f"{now.isoformat()} {reason}".strip())


def resume_sending(client: redis.Redis) -> None:
    client.delete(PAUSE_KEY)


def sending_paused(client: redis.Redis) -> bool:
    return bool(client.exists(PAUSE_KEY))


def pause_info(client: redis.Redis) -> str | None:
    value = client.get(PAUSE_KEY)
    return value.decode() if isinstance(value, bytes) else value
