"""Limits on the subscribe form, so nobody can use it to bomb an inbox with confirmations.

Fixed-window counters in Redis (INCR + EXPIRE in one transaction), shared by
every web process. Two budgets:

- per address: confirmation emails one mailbox can be sent per window. Past it
  the form still says "check your inbox" (no enumeration) but nothing is sent;
- per client IP: subscribe POSTs per window. Past it the form answers 429.

The address budget counts per *mailbox*, not per literal address: ``victim+1@`` and
``Victim+2@`` land in the same inbox, so they share one budget (the address itself is
stored as typed). Addresses are hashed before they become Redis keys: the keys need not
say who.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

PREFIX = "papermail:signup"
# Providers that ignore dots in the local part (j.doe@ and jdoe@ are one inbox).
DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def mailbox_key(address: str) -> str:
    """The inbox an address delivers to, as far as the budget is concerned: case folded,
    a "+tag" dropped, dots dropped where the provider ignores them."""
    local, _, domain = address.strip().rpartition("@")
    local, domain = local.casefold(), domain.casefold().rstrip(".")
    local = local.split("+", 1)[0] or local
    if domain in DOTLESS_DOMAINS:
        local = local.replace(".", "") or local
        domain = "gmail.com"
    return f"{local}@{domain}"


@dataclass(frozen=True, slots=True)
class Budget:
    limit: int
    window_seconds: int


@dataclass
class SignupLimits:
    client: redis.Redis
    per_address: Budget = Budget(limit=3, window_seconds=24 * 3600)
    per_ip: Budget = Budget(limit=20, window_seconds=3600)
    clock: Callable[[], float] = field(default=time.time)

    def allow_ip(self, ip: str) -> bool:
        """Count one subscribe POST from ``ip``; False once it is over budget."""
        return self._hit(f"ip:{ip}", self.per_ip)

    def allow_address(self, address: str) -> bool:
        """Count one confirmation email to this address's mailbox; False once over budget."""
        digest = hashlib.sha256(mailbox_key(address).encode()).hexdigest()[:32]
        return self._hit(f"addr:{digest}", self.per_address)

    def _hit(self, name: str, budget: Budget) -> bool:
        window = int(self.clock() // budget.window_seconds)
        key = f"{PREFIX}:{name}:{window}"
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, budget.window_seconds + 60)
        count, _ = pipe.execute()
        return int(count) <= budget.limit
