"""Who may use /ops and /metrics, and the CSRF check on the dashboard's forms.

HTTP basic auth against PAPERMAIL_OPS_USERNAME / PAPERMAIL_OPS_PASSWORD, compared in
constant time. With no password set, production refuses to serve /ops and /metrics at
all (503, saying what to set); development lets anyone in (``Operator.open_access``,
which the page shows as a warning banner), since a laptop demo should not need a
password. /readyz does not come through here: it is always open.

Forms carry a token from papermail.web.csrf bound to the operator's name.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from papermail.config import Settings
from papermail.web import csrf

REALM = 'Basic realm="papermail ops", charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    open_access: bool  # development without a password: anyone who can reach the page


def gate(request: Request, settings: Settings) -> Operator | Response:
    """The operator making this request, or the response that turns them away."""
    if settings.ops_password is None:
        if settings.environment == "production":
            return plain(
                503,
                "The ops dashboard and /metrics are disabled: set PAPERMAIL_OPS_PASSWORD "
                "(and PAPERMAIL_OPS_USERNAME, default 'ops') to enable them.\n",
            )
        return Operator(name="anonymous", open_access=True)
    given = _basic_credentials(request)
    expected = (settings.ops_username, settings.ops_password.get_secret_value())
    if given is not None:
        # Both compared, always: no early exit that tells a right name from a wrong one.
        user_ok = hmac.compare_digest(given[0].encode(), expected[0].encode())
        password_ok = hmac.compare_digest(given[1].encode(), expected[1].encode())
        if user_ok and password_ok:
            return Operator(name=given[0], open_access=False)
    return plain(401, "Authentication required.\n", {"WWW-Authenticate": REALM})


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
