"""How strong a signing secret must be: production refuses the development default and
anything guessable (see Settings.check_production_ready)."""

from __future__ import annotations

import math

DEFAULT_SECRET = "papermail-development-secret-change-me"  # noqa: S105 (refused in production)

MIN_SECRET_BITS = 128
MIN_SECRET_DISTINCT = 12
MAKE_SECRET = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"  # noqa: S105 (advice, not a secret)


def secret_weakness(secret: str) -> str | None:
    """Why this secret is too weak to sign links with, or None.

    The estimate is length × log2(distinct characters): 32 spaces count 0 bits, a
    repeated "abc" about 1.6 bits a character, token_urlsafe(32) over 200.
    """
    if secret == DEFAULT_SECRET:
        return "is the development default"
    if len(secret) < 32:
        return f"has {len(secret)} characters; it needs at least 32"
    distinct = len(set(secret))
    bits = len(secret) * math.log2(distinct) if distinct > 1 else 0.0
    if distinct < MIN_SECRET_DISTINCT or bits < MIN_SECRET_BITS:
        return (
            f"is too predictable ({distinct} distinct characters, about {bits:.0f} bits; "
            f"it needs {MIN_SECRET_DISTINCT}+ distinct characters and {MIN_SECRET_BITS}+ bits)"
        )
    return None
