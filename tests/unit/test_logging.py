"""logging_setup: JSON lines with the ids bound for a block, and a readable text form."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from papermail.logging_setup import configure_logging, current_context, log_context

log = logging.getLogger("papermail.test")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    out = io.StringIO()
    yield out
    for handler in list(root.handlers):
        if handler not in before_handlers:
            root.removeHandler(handler)
    root.setLevel(before_level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_ids_bound_for_the_block(stream: io.StringIO) -> None:
    configure_logging(json=True, level="INFO", stream=stream)
    with log_context(edition_id=7, batch_id="b-1"):
        log.info("claimed %d rows", 100)
        log.warning("bounced", extra={"delivery_id": 42, "subscriber_id": 3})
    log.info("outside")

    first, second, third = lines(stream)
    assert first["message"] == "claimed 100 rows"
    assert first["level"] == "INFO" and first["logger"] == "papermail.test"
    assert first["edition_id"] == 7 and first["batch_id"] == "b-1"
    assert str(first["ts"]).endswith("+00:00")
    assert second["delivery_id"] == 42 and second["subscriber_id"] == 3
    assert second["edition_id"] == 7
    assert "edition_id" not in third


def test_nested_blocks_add_ids_and_restore_them_after(stream: io.StringIO) -> None:
    with log_context(edition_id=1):
        with log_context(batch_id="x", edition_id=2):
            assert current_context() == {"edition_id": 2, "batch_id": "x"}
        assert current_context() == {"edition_id": 1}
    assert current_context() == {}


def test_an_explicit_extra_wins_over_the_context(stream: io.StringIO) -> None:
    configure_logging(json=True, stream=stream)
    with log_context(subscriber_id=1):
        log.info("x", extra={"subscriber_id": 2})
    assert lines(stream)[0]["subscriber_id"] == 2


def test_another_thread_does_not_see_this_threads_ids(stream: io.StringIO) -> None:
    configure_logging(json=True, stream=stream)
    with log_context(batch_id="mine"):
        thread = threading.Thread(target=lambda: log.info("from the other thread"))
        thread.start()
        thread.join()
    assert "batch_id" not in lines(stream)[0]


def test_exceptions_are_one_json_line_with_the_traceback(stream: io.StringIO) -> None:
    configure_logging(json=True, stream=stream)
    try:
        raise ValueError("bad row")
    except ValueError:
        log.exception("send failed", extra={"delivery_id": 9})
    (entry,) = lines(stream)
    assert "ValueError: bad row" in str(entry["exc_info"]) and entry["delivery_id"] == 9


def test_text_lines_append_the_ids(stream: io.StringIO) -> None:
    configure_logging(json=False, level="DEBUG", stream=stream)
    with log_context(edition_id=7, batch_id="b-1"):
        log.debug("hello")
    line = stream.getvalue().strip()
    assert line.endswith("papermail.test: hello [batch_id=b-1 edition_id=7]")


def test_configuring_twice_keeps_one_handler(stream: io.StringIO) -> None:
    configure_logging(json=False, stream=stream)
    configure_logging(json=True, stream=stream)
    log.info("once")
    assert len(stream.getvalue().splitlines()) == 1
    assert lines(stream)[0]["message"] == "once"
