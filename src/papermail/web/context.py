"""What every route needs, built once per app from a Wiring, and page rendering."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import redis
from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.formparsers import MultiPartException

from papermail.clock import Clock
from papermail.sources.arxiv_taxonomy import CATEGORIES
from papermail.subscribers.signup_limits import SignupLimits
from papermail.subscribers.tokens import Links, TokenSigner
from papermail.web import csrf as csrf_mod
from papermail.web.csrf import CsrfGuard
from papermail.web.forms import LIST_FIELDS

SendConfirmation = Callable[[int], None]


@dataclass
class Pages:
    env: jinja2.Environment
    css: str
    list_name: str

    @property
    def css_url(self) -> str:
        return "/static/papermail.css?v=" + hashlib.sha256(self.css.encode()).hexdigest()[:10]

    def render(self, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        defaults = {
            "title": None,
            "notice": None,
            "css_url": self.css_url,
            "list_name": self.list_name,
        }
        html = self.env.get_template(f"web/{name}").render({**defaults, **context})
        return HTMLResponse(html, status_code=status)

    @classmethod
    def load(cls, env: jinja2.Environment, templates_dir: Path, list_name: str) -> Pages:
        css = (templates_dir / "web" / "papermail.css").read_text(encoding="utf-8")
        return cls(env=env, css=css, list_name=list_name)


@dataclass
class WebContext:
    sessions: sessionmaker[Session]
    redis: redis.Redis
    links: Links
    pages: Pages
    csrf: CsrfGuard
    limits: SignupLimits
    send_confirmation: SendConfirmation
    clock: Clock
    secure_cookies: bool
    default_max_papers: int = 10  # PAPERMAIL_DEFAULT_MAX_PAPERS, what a new reader gets

    @property
    def signer(self) -> TokenSigner:
        return self.links.signer

    def form_cookie(self, request: Request) -> tuple[str, bool]:
        """The browser's CSRF cookie value, and whether the response must set it."""
        value = request.cookies.get(csrf_mod.COOKIE, "")
        if 16 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum():
            return value, False
        return csrf_mod.new_cookie_value(), True

    def set_form_cookie(self, response: HTMLResponse, value: str) -> None:
        response.set_cookie(
            csrf_mod.COOKIE,
            value,
            max_age=7 * 24 * 3600,
            httponly=True,
            samesite="lax",
            secure=self.secure_cookies,
            path="/",
        )


# Room for every text field plus a box per arXiv category: ticking too many must get the
# page's own "at most 20" sentence, not a refusal to read the form.
MAX_FORM_FIELDS = 40 + len(CATEGORIES)


async def form_data(request: Request) -> dict[str, str]:
    """The posted form's text fields (first value of each, every value of a checkbox
    field joined by commas); files are refused."""
    try:
        async with request.form(
            max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=64 * 1024
        ) as form:
            data: dict[str, str] = {}
            for name, value in form.multi_items():
                if not isinstance(value, str):
                    continue
                if name in LIST_FIELDS and name in data:
                    data[name] = f"{data[name]},{value}"
                else:
                    data.setdefault(name, value)
            return data
    except (MultiPartException, UnicodeDecodeError) as exc:
        raise HTTPException(400, "The form could not be read.") from exc


def get_web(request: Request) -> WebContext:
    web: WebContext = request.app.state.web
    return web
