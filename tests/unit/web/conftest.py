"""The subscriber pages' app on SQLite + fakeredis with the memory mail backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from papermail.config import Settings
from tests.support.web import Web, running_web


@pytest.fixture
def web(settings: Settings) -> Iterator[Web]:
    yield from running_web(settings)
