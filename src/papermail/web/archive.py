"""Public pages about editions: the web copy of each, the archive, the Atom feed.

The web copy shows an edition's top papers, the same for everyone: no personal
selection, no personal links (it is public, and linked from every digest). That includes
the cards' "More like this" / "Less like this" links, which are signed for one reader:
the cards here are built from papers alone (``edition_view``), never from a digest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from papermail.dates import edition_heading
from papermail.models import Edition, EditionItem, EditionKind
from papermail.pipeline.rendering import PaperCard
from papermail.subscribers.tokens import Links
from papermail.web.context import WebContext, get_web

router = APIRouter()

WEB_COPY_PAPERS = 20  # papers on an edition's web page
ARCHIVE_PAGE = 30  # editions per archive page
FEED_ENTRIES = 20
FEED_PAPERS = 10
PUBLIC_CACHE = "public, max-age=300"


@dataclass(frozen=True, slots=True)
class EditionView:
    day: dt.date
    kind: str
    heading: str
    url: str  # path on this site
    papers: tuple[PaperCard, ...]
    total: int
    created_at: dt.datetime


def edition_view(edition: Edition, links: Links, *, limit: int) -> EditionView:
    items = sorted(edition.items, key=lambda item: item.rank)
    cards = tuple(
        PaperCard.from_paper(item.paper, reason="", url=links.paper(item.paper_id))
        for item in items[:limit]
    )
    kind = edition.kind.value
    return EditionView(
        day=edition.day,
        kind=kind,
        heading=edition_heading(edition.day, kind),
        url=edition_path(edition.day, kind),
        papers=cards,
        total=len(items),
        created_at=edition.created_at,
    )


def edition_path(day: dt.date, kind: str) -> str:
    return f"/editions/{day.isoformat()}" + ("" if kind == "daily" else f"?kind={kind}")


def _with_items(query):
    return query.options(selectinload(Edition.items).joinedload(EditionItem.paper))


def latest_view(session: Session, links: Links, *, limit: int) -> EditionView | None:
    edition = session.scalar(
        _with_items(
            select(Edition)
            .where(Edition.kind == EditionKind.DAILY)
            .order_by(Edition.day.desc())
            .limit(1)
        )
    )
    return edition_view(edition, links, limit=limit) if edition else None


def _recent(session: Session, *, before: dt.date | None, limit: int) -> list[Edition]:
    query = select(Edition).order_by(Edition.day.desc(), Edition.kind).limit(limit)
    if before is not None:
        query = query.where(Edition.day < before)
    return list(session.scalars(_with_items(query)).unique())


def _parse_day(raw: str) -> dt.date:
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise HTTPException(404, "There is no edition for that date.") from exc


@router.get("/editions", response_class=HTMLResponse)
def archive(
    before: str | None = Query(None, max_length=10), web: WebContext = Depends(get_web)
) -> Response:
    cutoff = _parse_day(before) if before else None
    with web.sessions() as session:
        editions = _recent(session, before=cutoff, limit=ARCHIVE_PAGE + 1)
        views = [edition_view(e, web.links, limit=3) for e in editions[:ARCHIVE_PAGE]]
    older = views[-1].day.isoformat() if len(editions) > ARCHIVE_PAGE else None
    response = web.pages.render("archive.html.j2", editions=views, older=older, title="Archive")
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


@router.get("/editions/{day}", response_class=HTMLResponse)
def web_copy(
    day: str, kind: str = Query("daily", max_length=10), web: WebContext = Depends(get_web)
) -> Response:
    if kind not in {k.value for k in EditionKind}:
        raise HTTPException(404, "There is no edition of that kind.")
    wanted = _parse_day(day)
    with web.sessions() as session:
        edition = session.scalar(
            _with_items(
                select(Edition).where(Edition.day == wanted, Edition.kind == EditionKind(kind))
            )
        )
        if edition is None:
            raise HTTPException(404, "There is no edition for that date.")
        view = edition_view(edition, web.links, limit=WEB_COPY_PAPERS)
        newer = _neighbour(session, edition, newer=True)
        older = _neighbour(session, edition, newer=False)
    response = web.pages.render(
        "edition.html.j2", edition=view, newer=newer, older=older, title=view.heading
    )
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


def _neighbour(session: Session, edition: Edition, *, newer: bool) -> str | None:
    order = Edition.day.asc() if newer else Edition.day.desc()
    where = Edition.day > edition.day if newer else Edition.day < edition.day
    day = session.scalar(
        select(Edition.day).where(where, Edition.kind == edition.kind).order_by(order).limit(1)
    )
    return edition_path(day, edition.kind.value) if day else None


@router.get("/feed.atom")
def feed(web: WebContext = Depends(get_web)) -> Response:
    with web.sessions() as session:
        editions = _recent(session, before=None, limit=FEED_ENTRIES)
        views = [edition_view(e, web.links, limit=FEED_PAPERS) for e in editions]
    base = web.links.base_url
    updated = max((v.created_at for v in views), default=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    body = web.pages.env.get_template("web/feed.atom.j2").render(
        editions=views,
        base_url=base,
        updated=updated,
        list_name=web.pages.list_name,
        domain=base.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0],
    )
    return Response(
        body,
        media_type="application/atom+xml; charset=utf-8",
        headers={"Cache-Control": PUBLIC_CACHE},
    )
