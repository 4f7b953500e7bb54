"""The raw SMTP baseline: one real digest's bytes over reused smtplib connections.

Run against the same sink as the pipeline, it says how fast bare SMTP goes on this
machine; the bench reports the pipeline's rate as a ratio to it.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import smtplib
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

from sqlalchemy import select

from papermail.config import Settings
from papermail.models import Delivery, Edition
from papermail.pipeline.encoding import DateHeaders
from papermail.wiring import Wiring
from papermail_dev.bench.sink_process import SinkProcess


def sample_message(settings: Settings) -> bytes:
    """One real digest as the pipeline builds it: the baseline's payload."""
    w = Wiring(settings)
    with w.sessions() as session:
        row = session.execute(
            select(Delivery.variant_key, Delivery.edition_id).order_by(Delivery.id).limit(1)
        ).one()
        edition = session.get(Edition, row.edition_id)
        assert edition is not None
        template = w.templates().get(session, row.variant_key, edition=edition)
    url = w.links.unsubscribe(1, 1)
    values = {
        "email": "baseline@bench.example.org",
        "unsubscribe_url": url,
        "preferences_url": w.links.preferences(1, 1),
    }
    # Each card's feedback links, exactly as the send path fills them.
    tokens = w.links.signer.feedback_tokens(1, payload_suffixes=template.feedback_payloads)
    values.update(zip(template.feedback_slots, tokens, strict=True))
    data = template.render(
        to="baseline@bench.example.org",
        message_id="<baseline@bench>",
        date=dt.datetime.now(dt.UTC),
        dates=DateHeaders(),
        unsubscribe_url=url,
        values=values,
    )
    w.engine.dispose()
    w.redis.close()
    return data


def _baseline_sender(
    host: str, port: int, count: int, data: bytes, go: Event, done: Queue[float]
) -> None:
    client = smtplib.SMTP(host, port)
    go.wait()  # connected and imported: only the sending is timed
    for n in range(count):
        client.sendmail("bench@bench.example.org", [f"baseline{n}@bench.example.org"], data)
    done.put(time.perf_counter())
    client.quit()


def raw_baseline(sink: SinkProcess, *, data: bytes, connections: int, messages: int) -> float:
    """Pre-built bytes over reused smtplib connections, one process each: emails/s."""
    per = max(1, messages // connections)
    ctx = multiprocessing.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_baseline_sender, args=(sink.host, sink.port, per, data, go, done))
        for _ in range(connections)
    ]
    for proc in procs:
        proc.start()
    time.sleep(3)  # let every process import and connect
    start = time.perf_counter()
    go.set()
    finished = max(done.get(timeout=600) for _ in procs)
    for proc in procs:
        proc.join()
    return per * connections / (finished - start)
