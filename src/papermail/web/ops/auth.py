"""Who may use /ops and /metrics, and the CSRF check on the dashboard's forms.

HTTP basic auth against PAPERMAIL_OPS_USERNAME / PAPERMAIL_OPS_PASSWORD, compared in
constant time. With no password set, production refuses to serve /ops and /metrics at
all (503, saying what to set); development lets anyone in (``Operator.open_access``,
which the page shows as a warning banner), since a laptop demo should not need a
password. /readyz does not come through here: it is always open.

Wrong credentials are throttled per client address (``FAILURE_LIMIT`` per
``FAILURE_WINDOW_SECONDS``, counted in the Wiring's Redis so every web process shares
the budget): past it, the answer is 429 with Retry-After, before the password is even
compared. Only failures count, and nothing resets a budget: a good login from one address
neither spends nor refreshes another's, and an attacker sharing an operator's address
cannot wipe their count by waiting for the operator to sign in. A request without
credentials (the browser's first try, before it asks) is a challenge, not a failure.
The client address is ``request.client.host``: behind a trusted proxy uvicorn has already
put the real client there (PAPERMAIL_FORWARDED_ALLOW_IPS).

Forms carry a token from papermail.web.csrf bound to the operator's name.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from dataclasses import dataclass

import redis as redis_lib
from fastapi import Request
from fastapi.responses import Response

from papermail.config import Settings
from papermail.ops.throttle import FixedWindow, client_key
from papermail.web import csrf

log = logging.getLogger(__name__)

REALM = 'Basic realm="papermail ops", charset="UTF-8"'
# An operator who mistypes gets ten tries in five minutes; a guesser from one address gets
# under 3,000 a day instead of thousands a second (measured: 300 in 0.2 s unthrottled).
# Five minutes is as long as a locked-out operator should wait, and short enough that an
# attacker on a shared address (an office NAT) cannot keep the operator out for long.
FAILURE_LIMIT = 10
FAILURE_WINDOW_SECONDS = 5 * 60
THROTTLE_PREFIX = "papermail:ops:auth-failures"


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    open_access: bool  # development without a password: anyone who can reach the page


def failures(redis: redis_lib.Redis) -> FixedWindow:
    """The budget of failed sign-ins per client address."""
    return FixedWindow(
        redis,
        prefix=THROTTLE_PREFIX,
        limit=FAILURE_LIMIT,
        window_seconds=FAILURE_WINDOW_SECONDS,
    )


def gate(request: Request, settings: Settings, redis: redis_lib.Redis) -> Operator | Response:
    """The operator making this request, or the response that turns them away."""
    if settings.ops_password is None:
        if settings.environment == "production":
            return plain(
                503,
                "The ops dashboard and /metrics are disabled: set PAPERMAIL_OPS_PASSWORD "
                "(and PAPERMAIL_OPS_USERNAME, default 'ops') to enable them.\n",
            )
        return Operator(name="anonymous", open_access=True)
    if "authorization" not in request.headers:
        return _challenge()  # the browser's first try: it asks for a password next
    client = client_key(request.client.host if request.client else "unknown")
    budget = failures(redis)
    if (wait := _retry_after(budget, client)) is not None:
        log.warning(
            "ops sign-in refused: too many failures from %s (retry in %d s)",
            client,
            wait,
            extra={"client": client, "path": request.url.path},
        )
        return plain(
            429,
            "Too many failed sign-ins from your address. Try again later.\n",
            {"Retry-After": str(wait)},
        )
    given = _basic_credentials(request)
    expected = (settings.ops_username, settings.ops_password.get_secret_value())
    if given is not None:
        # Both compared, always: no early exit that tells a right name from a wrong one.
        user_ok = hmac.compare_digest(given[0].encode(), expected[0].encode())
        password_ok = hmac.compare_digest(given[1].encode(), expected[1].encode())
        if user_ok and password_ok:
            return Operator(name=given[0], open_access=False)
    _count_failure(budget, client)
    return _challenge()


def _challenge() -> Response:
    return plain(401, "Authentication required.\n", {"WWW-Authenticate": REALM})


# While Redis is down the budget cannot be read: let the password decide alone (and say
# so), since /ops is where an operator looks during exactly that outage.


def _retry_after(budget: FixedWindow, client: str) -> int | None:
    try:
        return budget.retry_after(client)
    except redis_lib.RedisError as exc:
        log.warning("ops sign-in throttle unavailable (%s): not throttling", type(exc).__name__)
        return None


def _count_failure(budget: FixedWindow, client: str) -> None:
    try:
        count = budget.hit(client)
    except redis_lib.RedisError as exc:
        log.warning("ops sign-in throttle could not count a failure (%s)", type(exc).__name__)
        return
    if count == FAILURE_LIMIT:
        log.warning(
            "ops sign-in: %d failures from %s in %d s; refusing it until the window ends",
            count,
            client,
            FAILURE_WINDOW_SECONDS,
            extra={"client": client},
        )


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def plain(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    """A short text answer that no cache keeps (a refusal, a 404)."""
    return Response(
        body,
        status_code=status,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


# --- forms ----------------------------------------------------------------------------------


def csrf_token(settings: Settings, operator: Operator) -> str:
    return _guard(settings).issue(csrf.operator_binding(operator.name))


def csrf_ok(request: Request, settings: Settings, operator: Operator, token: str) -> bool:
    """A form this operator got from /ops, posted from /ops (not from another site)."""
    if csrf.cross_site(request.headers.get("sec-fetch-site")):
        return False  # refused before the token is even looked at
    return _guard(settings).check(token, csrf.operator_binding(operator.name))


def _guard(settings: Settings) -> csrf.CsrfGuard:
    return csrf.ops_guard(settings.secret_key.get_secret_value())
