"""A send-rate limit shared by every worker: a token bucket kept in Redis.

The bucket refills continuously at ``rate`` tokens per second up to ``burst``;
the script runs atomically in Redis and uses Redis's own clock, so workers on
different machines with skewed clocks still share one budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import redis

# KEYS[1] bucket; ARGV rate/s, burst, tokens wanted. Returns 0 when granted, else ms to wait.
_BUCKET_SCRIPT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, ts = burst, t end
tokens = math.min(burst, tokens + math.max(0, t - ts) * rate)
local wait = 0
if tokens >= want then
  tokens = tokens - want
else
  wait = math.ceil((want - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', t)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
return wait
"""


class RateLimiter(Protocol):
    def acquire(self) -> None:
        """Block until one message may be sent."""


class Unlimited:
    def acquire(self) -> None:
        return None


class RedisTokenBucket:
    def __init__(
        self,
        client: redis.Redis,
        *,
        rate: float,
        burst: float | None = None,
        key: str = "papermail:ratelimit:smtp",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive; use Unlimited for no limit")
        self.rate = rate
        # A small burst keeps the rate smooth: at most a second's worth at once.
        self.burst = burst if burst is not None else max(1.0, rate)
        if self.burst < 1:
            # acquire() takes one token at a time: a smaller bucket never holds one.
            raise ValueError("burst must be at least 1")
        self.key = key
        self._script = client.register_script(_BUCKET_SCRIPT)
        self._sleep = sleep

    def acquire(self) -> None:
        while True:
            wait_ms = int(self._script(keys=[self.key], args=[self.rate, self.burst, 1]))
            if wait_ms <= 0:
                return
            self._sleep(wait_ms / 1000)


def make_limiter(client: redis.Redis, *, rate: float, key: str) -> RateLimiter:
    return RedisTokenBucket(client, rate=rate, key=key) if rate > 0 else Unlimited()
