"""Outbox delivery for demos: every message becomes files a person can open.

For each send, in the outbox directory:

- ``<name>.eml``       the exact bytes that SMTP would have carried
- ``<name>.html``      the decoded text/html part, when there is one, for a browser
- ``manifest.jsonl``   one appended JSON line per message: the record of what was sent

and on close(), ``index.html`` listing every message in the manifest, newest first.

Several connections (batches, even processes) may share one directory: files are
written to a temporary name and renamed into place, and each manifest line is a
single append, so nobody ever reads half a file or half a line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import hashlib
import html
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from papermail.delivery.base import OutgoingMessage, TransientError, nothing

__all__ = ["MANIFEST", "OutboxBackend", "OutboxConnection", "safe_name", "write_index"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
INDEX = "index.html"
_UNSAFE = re.compile(r"(?:[^A-Za-z0-9._-]|\.\.+)+")  # anything else, and any ".."
_SAFE_FILE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
# A UTF-8 byte order mark outranks any <meta charset> in the email's HTML, so a
# browser opening the file from disk decodes it as what it is: UTF-8.
_BOM = b"\xef\xbb\xbf"


class OutboxBackend:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def open(self) -> OutboxConnection:
        self.directory.mkdir(parents=True, exist_ok=True)
        return OutboxConnection(self.directory)


class OutboxConnection:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(
        self, message: OutgoingMessage, *, before_accept: Callable[[], None] = nothing
    ) -> None:
        before_accept()
        try:
            self._write(message)
        except OSError as exc:  # a full disk is a reason to retry later, not to bounce
            raise TransientError(f"cannot write to outbox {self.directory}: {exc}") from exc

    def close(self) -> None:
        # The index is a convenience rebuilt from the manifest; failing to write it
        # must not fail a batch whose messages were all written.
        try:
            write_index(self.directory)
        except OSError as exc:
            log.warning("could not rewrite %s: %s", self.directory / INDEX, exc)

    def _write(self, message: OutgoingMessage) -> None:
        name = safe_name(message.message_id, message.recipient)
        parsed = email.message_from_bytes(message.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)  # guaranteed by policy.default
        _write_atomic(self.directory / f"{name}.eml", message.data)
        html_part = _html_of(parsed)
        if html_part is not None:
            _write_atomic(self.directory / f"{name}.html", _BOM + html_part.encode("utf-8"))
        entry = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "recipient": message.recipient,
            "subject": str(parsed.get("Subject", "")),
            "message_id": message.message_id,
            "eml": f"{name}.eml",
            "html": f"{name}.html" if html_part is not None else None,
        }
        _append_line(self.directory / MANIFEST, entry)


def safe_name(message_id: str, recipient: str) -> str:
    """A file name stem from the Message-ID and recipient: only [A-Za-z0-9._-].

    Leading dots and dashes go (no hidden files, no "..", no option-like names), and a
    short hash of the originals keeps two ids that sanitise alike from colliding.
    """
    readable = _UNSAFE.sub("_", f"{message_id.strip('<>')}--{recipient}").lstrip("._-")
    digest = hashlib.sha256(f"{message_id}\0{recipient}".encode()).hexdigest()[:10]
    return f"{readable[:120] or 'message'}-{digest}"


def write_index(directory: Path) -> None:
    """(Re)write index.html from the manifest.

    Another connection may append while we render; if the manifest grew meanwhile,
    render again so the last writer's page is never missing a line it could have seen.
    """
    manifest = directory / MANIFEST
    for _ in range(5):
        raw = manifest.read_bytes() if manifest.exists() else b""
        _write_atomic(directory / INDEX, _render_index(_parse_manifest(raw)).encode("utf-8"))
        if not manifest.exists() or manifest.stat().st_size == len(raw):
            return


def _html_of(parsed: EmailMessage) -> str | None:
    part = parsed.get_body(preferencelist=("html",))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset, broken encoding: keep the .eml only
        return None
    return content if isinstance(content, str) else None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are for people to read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _append_line(path: Path, entry: dict[str, Any]) -> None:
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
    # Unbuffered append: one write(2) with O_APPEND, so lines from concurrent
    # writers never interleave.
    with open(path, "ab", buffering=0) as file:
        file.write(line)


def _parse_manifest(raw: bytes) -> list[dict[str, Any]]:
    entries = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a damaged line must not take the whole index down
        if isinstance(entry, dict):
            entries.append(entry)
    # Newest first; lines are appended in time order, so ties keep that order reversed.
    return sorted(reversed(entries), key=lambda e: str(e.get("time", "")), reverse=True)


def _render_index(entries: list[dict[str, Any]]) -> str:
    rows = "\n".join(_render_row(entry) for entry in entries)
    if not rows:
        rows = '<tr><td colspan="4" class="empty">No emails yet.</td></tr>'
    count = f"{len(entries)} email{'' if len(entries) == 1 else 's'}"
    return _PAGE.format(count=count, rows=rows)


def _render_row(entry: dict[str, Any]) -> str:
    when = str(entry.get("time", ""))[:19].replace("T", " ")
    links = " ".join(
        link for link in (_link(entry.get("html"), "view"), _link(entry.get("eml"), ".eml")) if link
    )
    return (
        f"<tr><td class=when>{_e(when)}</td><td>{_e(entry.get('recipient'))}</td>"
        f"<td>{_e(entry.get('subject'))}</td><td class=links>{links}</td></tr>"
    )


def _link(name: object, label: str) -> str:
    # The manifest is ours, but link only to plain file names beside the index anyway.
    if not isinstance(name, str) or not _SAFE_FILE.fullmatch(name):
        return ""
    return f'<a href="{_e(name)}">{_e(label)}</a>'


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>papermail outbox</title>
<style>
  body {{ font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
         max-width: 70rem; padding: 0 1rem; color: #1f2328; background: #fff; }}
  h1 {{ font-size: 1.4rem; margin-bottom: .2rem; }}
  p.count {{ color: #59636e; margin-top: 0; }}
  table {{ border-collapse: collapse; width: 100%; }}
  th, td {{ text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #d1d9e0;
            vertical-align: top; }}
  th {{ font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: #59636e; }}
  tr:hover td {{ background: #f6f8fa; }}
  td.when {{ white-space: nowrap; color: #59636e; font-variant-numeric: tabular-nums; }}
  td.links {{ white-space: nowrap; }}
  td.links a {{ margin-right: .6rem; }}
  td.empty {{ color: #59636e; text-align: center; padding: 2rem; }}
  a {{ color: #0969da; }}
</style>
</head>
<body>
<h1>papermail outbox</h1>
<p class="count">{count}, newest first. Nothing here was sent to anyone.</p>
<table>
<thead><tr><th>Time (UTC)</th><th>To</th><th>Subject</th><th>Open</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
