"""CSRF protection for the forms: a signed token in a hidden field, bound to something
the attacker's page cannot read.

- The subscribe form (no link token) binds to a random cookie: classic double submit.
- Pages reached through a signed link (preferences, unsubscribe) bind to that link's
  token, which is already a secret only the subscriber holds, so they need no cookie
  (some in-app mail browsers drop cookies).

The RFC 8058 one-click POST is exempt: mail providers send it without cookies or
form tokens, and it can only name a subscriber whose unsubscribe link it holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "pm_csrf"
FIELD = "csrf_token"
SALT = "papermail.csrf"
MAX_AGE = dt.timedelta(hours=24)


def link_binding(token: str) -> str:
    return "link:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def cookie_binding(cookie: str) -> str:
    return "cookie:" + cookie


def new_cookie_value() -> str:
    return secrets.token_urlsafe(24)


class CsrfGuard:
    def __init__(self, secret: str, *, max_age: dt.timedelta = MAX_AGE) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)
        self._max_age = int(max_age.total_seconds())

    def issue(self, binding: str) -> str:
        return str(self._serializer.dumps(binding))

    def check(self, submitted: str | None, binding: str | None) -> bool:
        if not submitted or not binding:
            return False
        try:
            bound = self._serializer.loads(submitted, max_age=self._max_age)
        except BadSignature:  # SignatureExpired is a BadSignature too
            return False
        return isinstance(bound, str) and hmac.compare_digest(bound, binding)
