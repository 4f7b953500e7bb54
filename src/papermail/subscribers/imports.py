"""CSV import of subscribers, with explicit consent.

Two steps, so an operator sees what will happen before it does: ``plan_import`` reads
the file and the database and changes nothing; ``apply_import`` does what the plan
says (checking the database again: a preview may be minutes old).

The rules:

- By default an imported address is pending and gets the confirmation email (through
  the Dispatcher, after the commit): their click is their consent, as on the web form.
- Active only with a consent source (where and when they agreed), recorded in the
  audit log for every row imported. Pending rows get an audit entry too.
- An address already known is never duplicated and never changed: active or pending
  ones are left as they are; an unsubscribed or suppressed one is never brought back.
  Each is reported as skipped, with the reason; so is a repeat within the file.
- Columns: ``email`` (required) and any of the preferences (``COLUMNS``), checked by
  :class:`~papermail.subscribers.preferences.Preferences` in the forms' words. An
  export's own columns (status, timestamps, bounce count) are ignored, so an export
  reads back in; any other column is refused, in case it is a typo.
- Any row error (row number, column, sentence) means nothing is imported: fix the
  file, preview again.
- At most ``MAX_IMPORT_BYTES`` and ``MAX_IMPORT_ROWS`` a file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail.models import Subscriber, SubscriberStatus
from papermail.subscribers.audit import Action, record
from papermail.subscribers.preferences import Preferences, field_errors
from papermail.subscribers.subscriptions import InvalidEmail, apply_preferences, normalize_email

log = logging.getLogger(__name__)

# A megabyte is ~20,000 plain rows: split a bigger list into several files. (The web
# upload stays under Starlette's 1 MiB in-memory spool with its form: never on disk.)
MAX_IMPORT_BYTES = 1_000_000
MAX_IMPORT_ROWS = 10_000
MAX_CONSENT = 500
LOOKUP_CHUNK = 500

# Column -> the Preferences field it fills (the names `subscribers add` and the export use).
COLUMNS = {
    "frequency": "frequency",
    "format": "format",
    "max_papers": "max_papers",
    "topics": "topics",
    "organizations": "follow_organizations",
    "authors": "follow_authors",
    "timezone": "timezone",
    "send_hour": "send_hour",
    "blend": "relevance_weight",
    "categories": "arxiv_categories",
}
FIELD_COLUMNS = {field: column for column, field in COLUMNS.items()}
# An export's columns that describe a subscriber rather than ask for anything: ignored.
IGNORED = ("status", "created_at", "confirmed_at", "unsubscribed_at", "bounce_count")
ROW = "row"  # the "column" of a problem with the whole row

CONSENT_REQUIRED = (
    "Importing as active needs a consent source: where and when these people agreed to "
    "get the digest (for example: sign-up sheet at the lab open day, 2026-11-20)."
)


class ImportRefused(ValueError):
    """The file as a whole cannot be imported (too large, not CSV, no email column, ...)."""


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # as a spreadsheet numbers it: the header is row 1
    column: str
    sentence: str


@dataclass(frozen=True, slots=True)
class Skipped:
    row: int
    email: str
    reason: str


@dataclass(frozen=True, slots=True)
class Addition:
    row: int
    email: str
    prefs: Preferences


@dataclass(frozen=True, slots=True)
class ImportPlan:
    status: SubscriberStatus  # what each addition becomes: pending or active
    consent_source: str | None
    rows: int
    additions: tuple[Addition, ...]
    skipped: tuple[Skipped, ...]
    errors: tuple[RowError, ...]
    ignored_columns: tuple[str, ...]

    @property
    def ready(self) -> bool:
        """Nothing stands in the way: ``apply_import`` would add ``additions``."""
        return not self.errors


@dataclass(frozen=True, slots=True)
class ImportResult:
    status: SubscriberStatus
    added: tuple[int, ...]  # subscriber ids, in file order
    skipped: tuple[Skipped, ...]  # the plan's, and any known since the plan was made


def clean_consent(text: str | None) -> str | None:
    cleaned = " ".join((text or "").split())
    if len(cleaned) > MAX_CONSENT:
        raise ImportRefused(f"Keep the consent source under {MAX_CONSENT} characters.")
    return cleaned or None


def plan_import(
    session: Session,
    data: bytes,
    *,
    active: bool,
    consent_source: str | None,
    default_max_papers: int,
) -> ImportPlan:
    """What importing ``data`` would do. Reads only; ImportRefused for the file as a whole."""
    consent = clean_consent(consent_source)
    if active and consent is None:
        raise ImportRefused(CONSENT_REQUIRED)
    reader, ignored = _reader(data)
    errors: list[RowError] = []
    skipped: list[Skipped] = []
    candidates: list[Addition] = []
    first_row: dict[str, int] = {}
    rows = 0
    for values in _records(reader):
        rows += 1
        if rows > MAX_IMPORT_ROWS:
            raise ImportRefused(
                f"The file has more than {MAX_IMPORT_ROWS:,} rows: split it into smaller files."
            )
        row = reader.line_num
        address, prefs, problems = _read_row(row, values, default_max_papers)
        if problems or prefs is None:
            errors.extend(problems)
        elif address in first_row:
            skipped.append(Skipped(row, address, f"Also on row {first_row[address]}: added once."))
        else:
            first_row[address] = row
            candidates.append(Addition(row, address, prefs))
    if rows == 0:
        raise ImportRefused("The file has a header row but no subscribers.")
    known = _known(session, [c.email for c in candidates])
    additions = []
    for candidate in candidates:
        if candidate.email in known:
            skipped.append(Skipped(candidate.row, candidate.email, known[candidate.email]))
        else:
            additions.append(candidate)
    return ImportPlan(
        status=SubscriberStatus.ACTIVE if active else SubscriberStatus.PENDING,
        consent_source=consent,
        rows=rows,
        additions=tuple(additions),
        skipped=tuple(sorted(skipped, key=lambda s: s.row)),
        errors=tuple(errors),
        ignored_columns=ignored,
    )


def apply_import(
    session: Session, plan: ImportPlan, *, actor: str, now: dt.datetime
) -> ImportResult:
    """Add what ``plan`` says, each with an audit entry. Flushes, does not commit: the
    caller commits, then sends pending subscribers their confirmation
    (``send_confirmations``)."""
    if not plan.ready:
        raise ImportRefused(
            f"Nothing was imported: {len(plan.errors)} problems in the file. "
            "Fix the rows named and try again."
        )
    known = _known(session, [a.email for a in plan.additions])
    late = [Skipped(a.row, a.email, known[a.email]) for a in plan.additions if a.email in known]
    added: list[tuple[Addition, Subscriber]] = []
    for addition in plan.additions:
        if addition.email in known:
            continue
        subscriber = Subscriber(
            email=addition.email,
            status=plan.status,
            created_at=now,
            confirmed_at=now if plan.status is SubscriberStatus.ACTIVE else None,
        )
        apply_preferences(subscriber, addition.prefs)
        session.add(subscriber)
        added.append((addition, subscriber))
    session.flush()
    for addition, subscriber in added:
        record(
            session,
            actor=actor,
            action=Action.IMPORT,
            now=now,
            subscriber_id=subscriber.id,
            reason=plan.consent_source,
            detail={
                "status": plan.status.value,
                "row": addition.row,
                "consent_source": plan.consent_source,
            },
        )
    session.flush()
    log.warning("%s imported %d subscribers as %s", actor, len(added), plan.status.value)
    return ImportResult(
        status=plan.status,
        added=tuple(s.id for _, s in added),
        skipped=tuple(sorted([*plan.skipped, *late], key=lambda s: s.row)),
    )


def send_confirmations(ids: Iterable[int], *, send: Callable[[int], None]) -> list[int]:
    """Dispatch each new pending subscriber's confirmation email (after the commit).

    Returns the ids whose dispatch failed (logged): they stay pending, and
    `papermail subscribers add ADDRESS --pending` sends theirs again.
    """
    failed = []
    for subscriber_id in ids:
        try:
            send(subscriber_id)
        except Exception:  # one failure must not stop the others
            log.exception("confirmation email for imported subscriber %s failed", subscriber_id)
            failed.append(subscriber_id)
    return failed


# --- reading the file -----------------------------------------------------------------------


def _reader(data: bytes) -> tuple[csv.DictReader[str], tuple[str, ...]]:
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportRefused(
            f"The file is {len(data):,} bytes; an import takes at most {MAX_IMPORT_BYTES:,} "
            f"bytes and {MAX_IMPORT_ROWS:,} rows. Split it into smaller files."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRefused(
            "The file is not UTF-8 text. Save it as CSV (UTF-8) and try again."
        ) from exc
    if "\0" in text:
        raise ImportRefused("The file is not CSV text (it has NUL bytes): save it as CSV.")
    if not text.strip():
        raise ImportRefused("The file is empty.")
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey=ROW)
    try:
        header = [_column(name) for name in reader.fieldnames or []]
    except csv.Error as exc:
        raise ImportRefused(f"The header row is not valid CSV: {exc}.") from exc
    reader.fieldnames = header
    _check_header(header)
    return reader, tuple(c for c in header if c in IGNORED)


def _records(reader: csv.DictReader[str]) -> Iterator[dict[str, str | list[str] | None]]:
    try:
        yield from reader
    except csv.Error as exc:
        raise ImportRefused(f"Row {reader.line_num} is not valid CSV: {exc}.") from exc


def _column(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def _check_header(header: Sequence[str]) -> None:
    accepted = ", ".join(COLUMNS)
    if "email" not in header:
        raise ImportRefused(
            "The file has no email column. Its first row names the columns: email, then "
            f"any of {accepted}."
        )
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise ImportRefused(f"The column {repeated[0] or '(blank)'} appears twice in the header.")
    unknown = [c for c in header if c != "email" and c not in COLUMNS and c not in IGNORED]
    if unknown:
        shown = ", ".join(c[:40] or "(blank)" for c in unknown[:5])
        raise ImportRefused(f"Unknown column {shown}. Columns are email and {accepted}.")


def _read_row(
    row: int, values: dict[str, str | list[str] | None], default_max_papers: int
) -> tuple[str, Preferences | None, list[RowError]]:
    problems = []
    if values.get(ROW):
        problems.append(RowError(row, ROW, "This row has more cells than the header has columns."))
    raw = values.get("email")
    address = ""
    if not isinstance(raw, str) or not raw.strip():
        problems.append(RowError(row, "email", "Give an email address."))
    else:
        try:
            address = normalize_email(raw)
        except InvalidEmail as exc:
            problems.append(RowError(row, "email", str(exc)))
    chosen: dict[str, object] = {"max_papers": default_max_papers}
    for column, field in COLUMNS.items():
        cell = values.get(column)
        if isinstance(cell, str) and cell.strip():
            chosen[field] = cell.strip()
    prefs = None
    try:
        prefs = Preferences.model_validate(chosen)
    except ValidationError as exc:
        problems.extend(
            RowError(row, FIELD_COLUMNS.get(field, field), sentence)
            for field, sentence in field_errors(exc).items()
        )
    return address, prefs, problems


def _known(session: Session, addresses: Sequence[str]) -> dict[str, str]:
    """{address: why it is skipped} for the addresses papermail already has."""
    found = {}
    for start in range(0, len(addresses), LOOKUP_CHUNK):
        chunk = addresses[start : start + LOOKUP_CHUNK]
        rows = session.execute(
            select(Subscriber.email, Subscriber.status, Subscriber.unsubscribed_at).where(
                Subscriber.email.in_(chunk)
            )
        )
        for address, status, since in rows:
            found[address] = skip_reason(status, since)
    return found


def skip_reason(status: SubscriberStatus, since: dt.datetime | None) -> str:
    if status is SubscriberStatus.ACTIVE:
        return "Already subscribed (active): left as it is."
    if status is SubscriberStatus.PENDING:
        return "Already signed up, waiting to confirm: left as it is."
    if status is SubscriberStatus.UNSUBSCRIBED:
        when = f" on {since:%Y-%m-%d}" if since else ""
        return f"Unsubscribed{when}: only they can come back, by subscribing again on the web form."
    return "Suppressed: papermail does not mail this address."
