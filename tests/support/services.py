"""Real services for integration tests: a PostgreSQL database, a Redis db, a Celery worker,
and local stand-ins for the Hugging Face and arXiv APIs. Everything listens on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import redis

from papermail_dev.bench import scratch_database

PG_ADMIN_URL = os.environ.get("PAPERMAIL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("PAPERMAIL_TEST_REDIS", "redis://127.0.0.1:6379")
ROOT = Path(__file__).resolve().parents[2]


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_BASE, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def temporary_database(prefix: str = "papermail_it") -> AbstractContextManager[str]:
    """A fresh PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    return scratch_database(PG_ADMIN_URL, prefix=prefix)


def sample_items_for(day: dt.date) -> list[dict[str, object]]:
    """The bundled sample, re-dated to ``day`` (so tests do not depend on the calendar)."""
    raw = json.loads(
        resources.files("papermail.data")
        .joinpath("sample_daily_papers.json")
        .read_text(encoding="utf-8")
    )
    stamp = f"{day.isoformat()}T"
    for item in raw:
        paper = item.get("paper") or {}
        if isinstance(paper.get("submittedOnDailyAt"), str):
            paper["submittedOnDailyAt"] = stamp + paper["submittedOnDailyAt"].split("T", 1)[1]
    return raw


class FakeHuggingFace:
    """Serves /api/daily_papers: the sample for ``day_with_papers()``, [] for other days."""

    def __init__(self, day_with_papers: Callable[[], dt.date]) -> None:
        self.day_with_papers = day_with_papers
        self.requests: list[str] = []
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                fake.requests.append(self.path)
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path != "/api/daily_papers":
                    self.send_error(404)
                    return
                day = query.get("date", [""])[0]
                page = int(query.get("p", ["0"])[0])
                items = (
                    sample_items_for(fake.day_with_papers())
                    if day == fake.day_with_papers().isoformat() and page == 0
                    else []
                )
                body = json.dumps(items).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        return Handler

    def __enter__(self) -> FakeHuggingFace:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


ARXIV_FIXTURES = ROOT / "tests" / "fixtures" / "arxiv"
ARXIV_RECORDED_DAY = dt.date(2026, 11, 26)
ARXIV_RECORDED_PAGES = ("day_2026-11-26_p0.xml", "day_2026-11-26_p1.xml")
_ATOM_DATE = re.compile(rb"<(published|updated)>(\d{4}-\d{2}-\d{2})T")
_START_INDEX = re.compile(rb"<opensearch:startIndex>(\d+)</opensearch:startIndex>")
_TOTAL = re.compile(rb"<opensearch:totalResults>\d+</opensearch:totalResults>")


def arxiv_pages_for(
    day: dt.date, names: tuple[str, ...] = ARXIV_RECORDED_PAGES
) -> tuple[dict[int, bytes], bytes]:
    """The recorded answers for ARXIV_RECORDED_DAY, every date moved by the same number of
    days so that day becomes ``day``: the pages by their first result's index, and the
    answer past the last one (no entries).

    The recording says 37 results but holds the first 10; the pages here say 10, so a
    fetch ends where the recording does instead of asking for pages nobody recorded."""
    shift = day - ARXIV_RECORDED_DAY

    def moved(match: re.Match[bytes]) -> bytes:
        stamp = dt.date.fromisoformat(match[2].decode()) + shift
        return b"<%s>%sT" % (match[1], stamp.isoformat().encode())

    raw = [_ATOM_DATE.sub(moved, (ARXIV_FIXTURES / name).read_bytes()) for name in names]
    total = sum(page.count(b"<entry>") for page in raw)
    tag = b"<opensearch:totalResults>%d</opensearch:totalResults>" % total
    pages: dict[int, bytes] = {}
    for page in raw:
        found = _START_INDEX.search(page)
        assert found is not None, "a recorded page without opensearch:startIndex"
        pages[int(found[1])] = _TOTAL.sub(tag, page)
    first = raw[0]
    past_end = first[: first.index(b"<entry>")] + b"</feed>\n"
    return pages, _TOTAL.sub(tag, past_end)


ARXIV_DESCRIBED = "by_id_2611.30002-3.xml"  # what arXiv says of two featured papers, by id
_ENTRY = re.compile(rb"<entry>.*?</entry>", re.S)
_ENTRY_ID = re.compile(rb"<id>https?://arxiv\.org/abs/([^<]+?)(?:v\d+)?</id>")


def arxiv_described(ids: set[str]) -> bytes:
    """arXiv's answer to an ``id_list`` query: the recorded entries of those ids (every
    other id is one arXiv does not know), totalResults saying how many."""
    raw = (ARXIV_FIXTURES / ARXIV_DESCRIBED).read_bytes()
    entries = [
        entry
        for entry in _ENTRY.findall(raw)
        if (found := _ENTRY_ID.search(entry)) and found[1].decode() in ids
    ]
    tag = b"<opensearch:totalResults>%d</opensearch:totalResults>" % len(entries)
    return _TOTAL.sub(tag, raw[: raw.index(b"<entry>")]) + b"".join(entries) + b"</feed>\n"


@dataclass(frozen=True)
class ArxivRequest:
    start: int
    max_results: int
    search_query: str
    id_list: str
    user_agent: str
    began: float  # time.monotonic()
    ended: float
    overlapped: bool  # another request was being answered when this one arrived


class FakeArxiv:
    """Serves /api/query: the recorded day, re-dated so that ``day_with_papers()`` is the
    recorded day, paged by ``start``. Remembers every request, and whether any two were
    in flight at once (arXiv's rule: one at a time)."""

    def __init__(self, day_with_papers: Callable[[], dt.date]) -> None:
        self.day_with_papers = day_with_papers
        self.requests: list[ArxivRequest] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _answer(self, start: int) -> bytes:
        pages, past_end = arxiv_pages_for(self.day_with_papers())
        return pages.get(start, past_end)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path != "/api/query":
                    self.send_error(404)
                    return
                began = time.monotonic()
                with fake._lock:
                    overlapped = fake._in_flight > 0
                    fake._in_flight += 1
                try:
                    if "id_list" in query:
                        body = arxiv_described(set(query["id_list"].split(",")))
                    else:
                        body = fake._answer(int(query.get("start", "0")))
                    time.sleep(0.05)  # long enough for a second request to overlap, if sent
                    self.send_response(200)
                    self.send_header("Content-Type", "application/atom+xml; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with fake._lock:
                        fake._in_flight -= 1
                        fake.requests.append(
                            ArxivRequest(
                                start=int(query.get("start", "0")),
                                max_results=int(query.get("max_results", "0")),
                                search_query=query.get("search_query", ""),
                                id_list=query.get("id_list", ""),
                                user_agent=self.headers.get("User-Agent", ""),
                                began=began,
                                ended=time.monotonic(),
                                overlapped=overlapped,
                            )
                        )

            def log_message(self, *args: object) -> None:
                return

        return Handler

    def __enter__(self) -> FakeArxiv:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class CeleryWorker:
    """``celery -A workers.celery_app worker`` as a child process with the given environment."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        concurrency: int = 2,
        name: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.concurrency = concurrency
        self.name = name or f"papermail-test-{uuid.uuid4().hex[:6]}@%h"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 60) -> CeleryWorker:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app",
                "worker",
                "--loglevel=INFO",
                f"--concurrency={self.concurrency}",
                "-n",
                self.name,
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        from celery import Celery

        app = Celery(broker=self.env["PAPERMAIL_REDIS_URL"])
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"celery worker exited with {self.process.returncode}")
                if app.control.ping(timeout=1.0):
                    return
                time.sleep(0.5)
        finally:
            app.close()
        raise TimeoutError("celery worker did not answer ping in time")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group (the main process and its pool children)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.25,
    message: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


# --- a throwaway redis-server (for tests that kill Redis itself) -------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_server_binary() -> str | None:
    import shutil

    return shutil.which("redis-server")


class RedisServer:
    """``redis-server`` on 127.0.0.1:<port> with no persistence, as a child process.

    ``kill()`` is a kill -9: everything in it (queued tasks, cached variants) is gone,
    and ``start()`` brings an empty server back on the same port.
    """

    def __init__(self, port: int | None = None, *, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, *, timeout: float = 10) -> RedisServer:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            wait_until(
                lambda: self._answers(client),
                timeout=timeout,
                interval=0.05,
                message=f"redis-server on port {self.port}",
            )
        finally:
            client.close()
        return self

    def _answers(self, client: redis.Redis) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """kill -9: no shutdown, no save."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
