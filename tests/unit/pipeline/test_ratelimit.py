"""The shared send-rate limit: a token bucket in Redis, timed by Redis's own clock."""

from __future__ import annotations

import fakeredis
import pytest
from fakeredis.commands_mixins import server_mixin

from papermail.pipeline.ratelimit import RedisTokenBucket, Unlimited, make_limiter


class RedisTime:
    """Stands in for the clock behind fakeredis's TIME; sleeping advances it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> RedisTime:
    fake = RedisTime()
    # Only TIME reads this module's ``time``; key expiry keeps the real clock.
    monkeypatch.setattr(server_mixin, "time", fake)
    return fake


def bucket(redis: fakeredis.FakeRedis, clock: RedisTime, **kwargs: float) -> RedisTokenBucket:
    return RedisTokenBucket(redis, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def wait_ms(limiter: RedisTokenBucket) -> int:
    """One raw script call: 0 when a token was taken, else how long to wait."""
    return int(limiter._script(keys=[limiter.key], args=[limiter.rate, limiter.burst, 1]))


def test_fakeredis_time_is_the_patched_clock(redis: fakeredis.FakeRedis, clock: RedisTime) -> None:
    seconds, micros = redis.time()
    assert seconds + micros / 1e6 == pytest.approx(clock.now)


def test_burst_is_granted_at_once(redis: fakeredis.FakeRedis, clock: RedisTime) -> None:
    limiter = bucket(redis, clock, rate=2.0, burst=5.0)
    for _ in range(5):
        limiter.acquire()
    assert clock.slept == []


def test_after_the_burst_acquire_sleeps_until_a_token_refills(
    redis: fakeredis.FakeRedis, clock: RedisTime
) -> None:
    limiter = bucket(redis, clock, rate=4.0, burst=2.0)
    limiter.acquire()
    limiter.acquire()
    limiter.acquire()
    assert clock.slept == [pytest.approx(0.25)]


def test_script_reports_the_wait_without_taking_a_token(
    redis: fakeredis.FakeRedis, clock: RedisTime
) -> None:
    # Binary fractions of a second keep the float arithmetic exact.
    limiter = bucket(redis, clock, rate=8.0, burst=1.0)
    assert wait_ms(limiter) == 0
    assert wait_ms(limiter) == 125
    clock.now += 0.0625
    assert wait_ms(limiter) == 63  # half a token refilled; the refusals took nothing
    clock.now += 0.0625
    assert wait_ms(limiter) == 0


def test_idle_time_refills_only_up_to_the_burst(
    redis: fakeredis.FakeRedis, clock: RedisTime
) -> None:
    limiter = bucket(redis, clock, rate=1.0, burst=3.0)
    for _ in range(3):
        assert wait_ms(limiter) == 0
    clock.now += 3600  # an hour idle is still only three tokens
    assert [wait_ms(limiter) for _ in range(4)] == [0, 0, 0, 1000]


def test_default_burst_is_one_seconds_worth(redis: fakeredis.FakeRedis, clock: RedisTime) -> None:
    assert bucket(redis, clock, rate=20.0).burst == 20.0
    assert bucket(redis, clock, rate=0.5).burst == 1.0


def test_rate_over_many_acquisitions(redis: fakeredis.FakeRedis, clock: RedisTime) -> None:
    limiter = bucket(redis, clock, rate=50.0, burst=5.0)
    start = clock.now
    for _ in range(1005):
        limiter.acquire()
    elapsed = clock.now - start
    # 5 free from the burst, then 1000 at 50/s: 20 s, give or take millisecond rounding.
    assert elapsed == pytest.approx(20.0, rel=0.02)


def test_workers_sharing_a_key_share_one_budget(
    redis: fakeredis.FakeRedis, clock: RedisTime
) -> None:
    first = bucket(redis, clock, rate=1.0, burst=2.0)
    second = bucket(redis, clock, rate=1.0, burst=2.0)
    assert wait_ms(first) == 0
    assert wait_ms(second) == 0
    assert wait_ms(first) == 1000
    assert wait_ms(second) == 1000


def test_different_keys_are_independent(redis: fakeredis.FakeRedis, clock: RedisTime) -> None:
    a = bucket(redis, clock, rate=1.0, burst=1.0)
    b = RedisTokenBucket(
        redis, rate=1.0, burst=1.0, key="papermail:ratelimit:other", sleep=clock.sleep
    )
    assert wait_ms(a) == 0
    assert wait_ms(b) == 0


def test_bucket_key_expires_after_it_would_be_full_again(
    redis: fakeredis.FakeRedis, clock: RedisTime
) -> None:
    limiter = bucket(redis, clock, rate=2.0, burst=4.0)
    limiter.acquire()
    ttl_ms = redis.pttl(limiter.key)
    assert 60_000 < ttl_ms <= 2_000 + 60_000


def test_rate_must_be_positive(redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        RedisTokenBucket(redis, rate=0)


def test_make_limiter_zero_rate_is_unlimited(redis: fakeredis.FakeRedis) -> None:
    assert isinstance(make_limiter(redis, rate=0, key="k"), Unlimited)
    limiter = make_limiter(redis, rate=3.0, key="k")
    assert isinstance(limiter, RedisTokenBucket) and limiter.key == "k"


def test_unlimited_never_waits() -> None:
    limiter = Unlimited()
    for _ in range(1000):
        assert limiter.acquire() is None


def test_burst_below_one_token_is_refused(redis: fakeredis.FakeRedis) -> None:
    # Such a bucket never holds a whole token: acquire() would sleep forever.
    with pytest.raises(ValueError, match="burst"):
        RedisTokenBucket(redis, rate=0.5, burst=0.5)
