"""The raw SMTP baseline: real digests' bytes over reused smtplib connections.

Run against the same sink as the pipeline, it says how fast bare SMTP goes on this
machine; the bench reports the pipeline's rate as a ratio to it.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import smtplib
import time
from collections.abc import Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, NamedTuple

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from papermail.config import Settings
from papermail.models import Delivery, Edition, Subscriber
from papermail.pipeline.encoding import DateHeaders
from papermail.wiring import Wiring
from papermail_dev.bench.sampling import MachineCounters, MachineLoad
from papermail_dev.bench.sink_process import SinkProcess

SAMPLE_MESSAGES = 100  # real digests the baseline cycles through


def sample_messages(settings: Settings, *, count: int = SAMPLE_MESSAGES) -> list[bytes]:
    """Real digests as the send path builds them, each with its reader's signed links, for
    ``count`` deliveries spread evenly over the edition: the run's mix of sizes and formats.

    One digest would not do: they range from ~5 KB (five papers, plain text) to ~80 KB
    (fifteen, HTML), and bare SMTP sends the smaller ones half again as fast.
    """
    w = Wiring(settings)
    try:
        with w.sessions() as session:
            numbered = (
                select(
                    Delivery.subscriber_id,
                    Subscriber.token_version,
                    Delivery.variant_key,
                    Delivery.edition_id,
                    func.row_number().over(order_by=Delivery.id).label("n"),
                )
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .subquery()
            )
            total = session.scalar(select(func.count()).select_from(Delivery)) or 0
            step = max(1, total // count)
            rows = session.execute(
                select(numbered).where(numbered.c.n % step == 0).order_by(numbered.c.n).limit(count)
            ).all()
            if not rows:
                raise LookupError("no deliveries to take the baseline's digests from")
            return [_message(w, session, row) for row in rows]
    finally:
        w.engine.dispose()
        w.redis.close()


def _message(w: Wiring, session: Session, row: Row[Any]) -> bytes:
    edition = session.get(Edition, row.edition_id)  # the session's identity map: one query
    assert edition is not None
    template = w.templates().get(session, row.variant_key, edition=edition)
    reader = row.subscriber_id
    url = w.links.unsubscribe(reader, row.token_version)
    values = {
        "email": "baseline@bench.example.org",
        "unsubscribe_url": url,
        "preferences_url": w.links.preferences(reader, row.token_version),
    }
    # Each card's feedback links, exactly as the send path fills them.
    tokens = w.links.signer.feedback_tokens(reader, payload_suffixes=template.feedback_payloads)
    values.update(zip(template.feedback_slots, tokens, strict=True))
    return template.render(
        to="baseline@bench.example.org",
        message_id=f"<baseline.{reader}@bench>",
        date=dt.datetime.now(dt.UTC),
        dates=DateHeaders(),
        unsubscribe_url=url,
        values=values,
    )


def _baseline_sender(
    host: str,
    port: int,
    count: int,
    payloads: Sequence[bytes],
    start: int,
    go: Event,
    done: Queue[float],
) -> None:
    client = smtplib.SMTP(host, port)
    go.wait()  # connected and imported: only the sending is timed
    for n in range(count):
        data = payloads[(start + n) % len(payloads)]
        client.sendmail("bench@bench.example.org", [f"baseline{n}@bench.example.org"], data)
    done.put(time.perf_counter())
    client.quit()


class BaselineRun(NamedTuple):
    emails_per_second: float
    messages: int  # sent in the timed window
    machine: MachineLoad  # the whole machine during that window


def raw_baseline(
    sink: SinkProcess, *, payloads: Sequence[bytes], connections: int, messages: int
) -> BaselineRun:
    """Pre-built messages over reused smtplib connections, one process each, every one
    cycling through ``payloads`` from its own place in them."""
    per = max(1, messages // connections)
    offset = max(1, len(payloads) // connections)
    ctx = multiprocessing.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_baseline_sender,
            args=(sink.host, sink.port, per, payloads, i * offset, go, done),
        )
        for i in range(connections)
    ]
    for proc in procs:
        proc.start()
    time.sleep(3)  # let every process import and connect
    counters = MachineCounters.now()
    start = time.perf_counter()
    go.set()
    finished = max(done.get(timeout=600) for _ in procs)
    machine = MachineLoad.between(counters, MachineCounters.now())
    for proc in procs:
        proc.join()
    sent = per * connections
    return BaselineRun(sent / (finished - start), sent, machine)
