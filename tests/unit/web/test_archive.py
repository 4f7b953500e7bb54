"""Web copies of editions, the archive, the Atom feed, and /healthz."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pytest
import redis

from papermail.models import EditionKind
from tests.support.web import (
    HOSTILE,
    Web,
    seed_edition,
)

ATOM = "{http://www.w3.org/2005/Atom}"
DAY = dt.date(2026, 11, 26)


def test_web_copy_shows_the_editions_top_papers_without_personal_links(web: Web) -> None:
    seed_edition(web, papers=25)
    response = web.client.get("/editions/2026-11-26")
    assert response.status_code == 200
    page = response.text
    assert "Thursday, 26 November 2026" in page
    assert page.count('class="card paper"') == 20
    assert 'href="https://huggingface.co/papers/2611.00000"' in page
    assert "/preferences/" not in page and "/unsubscribe/" not in page
    assert response.headers["cache-control"].startswith("public")


def test_the_digest_view_in_browser_link_resolves(web: Web) -> None:
    seed_edition(web, kind=EditionKind.WEEKLY, prefix="2612")
    link = web.runtime.links.edition(DAY, "weekly")
    path = link.removeprefix(web.runtime.links.base_url)
    assert path == "/editions/2026-11-26?kind=weekly"
    page = web.client.get(path)
    assert page.status_code == 200
    assert "Week of 26 November 2026" in page.text
    assert web.client.get("/editions/2026-11-26").status_code == 404  # no daily that day


def test_web_copy_escapes_hostile_papers(web: Web) -> None:
    seed_edition(web, hostile=True)
    page = web.client.get("/editions/2026-11-26").text
    assert "<script>" not in page and "<img src=x" not in page
    assert "javascript:" not in page


@pytest.mark.parametrize(
    "path",
    [
        "/editions/2026-11-27",
        "/editions/2026-13-01",
        "/editions/yesterday",
        "/editions/2026-11-26?kind=monthly",
        "/editions/20261126",
        "/editions?before=someday",
    ],
)
def test_missing_or_malformed_editions_are_a_404_page(web: Web, path: str) -> None:
    seed_edition(web)
    response = web.client.get(path)
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]
    assert "<h1>" in response.text


def test_edition_pages_link_their_neighbours(web: Web) -> None:
    for offset, prefix in ((0, "2601"), (1, "2602"), (2, "2603")):
        seed_edition(web, day=DAY + dt.timedelta(days=offset), prefix=prefix, papers=2)
    page = web.client.get("/editions/2026-11-27").text
    assert 'href="/editions/2026-11-26" rel="prev"' in page
    assert 'href="/editions/2026-11-28" rel="next"' in page


def test_archive_lists_editions_newest_first_and_pages(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    from papermail.web import archive

    monkeypatch.setattr(archive, "ARCHIVE_PAGE", 2)
    for offset in range(3):
        seed_edition(web, day=DAY + dt.timedelta(days=offset), prefix=f"26{offset:02d}", papers=4)
    seed_edition(web, day=DAY, kind=EditionKind.WEEKLY, prefix="2700", papers=4)
    first = web.client.get("/editions").text
    assert first.index("Saturday, 28 November 2026") < first.index("Friday, 27 November 2026")
    assert "Thursday, 26 November" not in first
    assert 'href="/editions?before=2026-11-27"' in first
    rest = web.client.get("/editions?before=2026-11-27").text
    assert "Thursday, 26 November 2026" in rest and "Week of 26 November 2026" in rest
    assert "?before=" not in rest
    assert "4 papers" in rest


def test_archive_when_empty(web: Web) -> None:
    assert "No editions yet" in web.client.get("/editions").text


def test_atom_feed_is_valid_and_escaped(web: Web) -> None:
    seed_edition(web, hostile=True, papers=3)
    seed_edition(web, day=DAY, kind=EditionKind.WEEKLY, prefix="2700", papers=2)
    response = web.client.get("/feed.atom")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(response.content)  # noqa: S314 (our own output)
    assert root.tag == f"{ATOM}feed"
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 2
    links = {e.find(f"{ATOM}link").get("href") for e in entries}  # type: ignore[union-attr]
    assert links == {
        "https://papers.example.org/editions/2026-11-26",
        "https://papers.example.org/editions/2026-11-26?kind=weekly",
    }
    ids = {e.findtext(f"{ATOM}id") for e in entries}
    assert len(ids) == 2
    content = next(
        e.findtext(f"{ATOM}content")
        for e in entries
        if "weekly" not in e.find(f"{ATOM}link").get("href")
    )  # type: ignore[union-attr]
    assert content is not None
    # The content is HTML (type="html"); the hostile title is text inside it, not markup.
    assert "<script>" not in content and "&lt;script&gt;" in content
    assert HOSTILE not in response.text


def test_empty_feed_is_still_valid(web: Web) -> None:
    root = ET.fromstring(web.client.get("/feed.atom").content)  # noqa: S314
    assert root.findall(f"{ATOM}entry") == []


def test_healthz_says_the_process_is_up(web: Web) -> None:
    response = web.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_stays_up_while_redis_is_down_and_readyz_says_so(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Liveness must not restart every web process during a Redis outage; readiness
    # takes them out of rotation instead.
    def down() -> bool:
        raise redis.ConnectionError("refused")

    monkeypatch.setattr(web.runtime.redis, "ping", down)
    assert web.client.get("/healthz").status_code == 200
    ready = web.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["redis"] != "ok"
