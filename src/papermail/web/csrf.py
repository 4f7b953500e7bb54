"""CSRF protection for the forms: a signed token in a hidden field, bound to something
the attacker's page cannot read.

- The subscribe form (no link token) binds to a random cookie: classic double submit.
- Pages reached through a signed link (preferences, unsubscribe) bind to that link's
  token, which is already a secret only the subscriber holds, so they need no cookie
  (some in-app mail browsers drop cookies).
- The operators' forms (/ops) bind to the basic-auth name, under their own salt and a
  shorter max age (``ops_guard``), and refuse a request the browser labels cross-site
  (basic-auth credentials ride along on cross-site POSTs, so they prove nothing alone).

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
OPS_SALT = "papermail.ops-csrf"
OPS_MAX_AGE = dt.timedelta(hours=12)  # a dashboard left open overnight needs a reload, not more


def link_binding(token: str) -> str:
    return "link:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def cookie_binding(cookie: str) -> str:
    return "cookie:" + cookie


def operator_binding(name: str) -> str:
    # The bare name: OPS_SALT already keeps these tokens apart from the others.
    return name


def new_cookie_value() -> str:
    return secrets.token_urlsafe(24)


def cross_site(sec_fetch_site: str | None) -> bool:
    """True when the browser says the request came from another site.

    Browsers label every request with where it came from (Sec-Fetch-Site); a request
    without the header (an old browser, curl) is not refused for lacking it. Origin
    can't be used instead: the pages' no-referrer policy makes it null.
    """
    return sec_fetch_site is not None and sec_fetch_site not in ("same-origin", "none")


class CsrfGuard:
    def __init__(self, secret: str, *, max_age: dt.timedelta = MAX_AGE, salt: str = SALT) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=salt)
        self._max_age = int(max_age.total_seconds())

    def issue(self, binding: str) -> str:
        return str(self._serializer.dumps(binding))

    def check(self, submitted: str | None, binding: str | None) -> bool:
        if not submitted or binding is None:
            return False
        try:
            bound = self._serializer.loads(submitted, max_age=self._max_age)
        except BadSignature:  # SignatureExpired is a BadSignature too
            return False
        return isinstance(bound, str) and hmac.compare_digest(bound, binding)


def ops_guard(secret: str) -> CsrfGuard:
    """The guard for the operators' forms; bind with ``operator_binding``."""
    return CsrfGuard(secret, max_age=OPS_MAX_AGE, salt=OPS_SALT)
