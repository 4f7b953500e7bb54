"""A fixed-window budget per key in Redis, shared by every web process.

The same pattern as ``subscribers.signup_limits`` (INCR + EXPIRE in one transaction, the
window number in the key), made generic: ``FixedWindow(client, prefix=..., limit=...,
window_seconds=...)`` counts events for any key, and says how long a key over budget
must wait. /ops uses it to throttle failed basic-auth attempts per client address
(``web.ops.auth``).

``client_key`` turns a client address into the key to count under: an IPv4 address as
is, an IPv6 address by its /64 (one subscriber line gets a whole /64, so counting single
IPv6 addresses would hand one attacker 2**64 budgets).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis as redis_lib

IPV6_PREFIX = 64


def client_key(host: str) -> str:
    """The address a budget is kept for: IPv4 as is, IPv6 as its /64, anything else as is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # "testclient", a Unix socket: nothing to group
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class FixedWindow:
    """At most ``limit`` events per key in each window of ``window_seconds``."""

    client: redis_lib.Redis
    prefix: str
    limit: int
    window_seconds: int
    clock: Callable[[], float] = field(default=time.time)

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until ``key`` has budget again; None while it has some now."""
        now = self.clock()
        window = int(now // self.window_seconds)
        count = self.client.get(self._key(key, window))
        if count is None or int(count) < self.limit:
            return None
        return max(1, math.ceil((window + 1) * self.window_seconds - now))

    def hit(self, key: str) -> int:
        """Count one event for ``key`` in the current window; the count so far."""
        window = int(self.clock() // self.window_seconds)
        name = self._key(key, window)
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(name)
        pipe.expire(name, self.window_seconds + 60)
        count, _ = pipe.execute()
        return int(count)

    def _key(self, key: str, window: int) -> str:
        return f"{self.prefix}:{key}:{window}"
