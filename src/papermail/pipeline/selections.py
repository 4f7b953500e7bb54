"""A planned selection as the variants row stores it: its JSON text and its key.

Equal selections get equal keys, across chunks and runs, so readers who would get the
same email share one variant.
"""

from __future__ import annotations

import hashlib
import json

from papermail.pipeline.pieces import Pick

Selection = tuple[Pick, ...]
PICKS_REMEMBERED = 10_000  # distinct picks whose JSON a planning run keeps (~3 MB at most)


def variant_key(edition_id: int, fmt: str, selection_json: str) -> str:
    """A selection's key: equal selections, equal keys, across chunks and runs.

    From the selection's JSON (unambiguous, and written to the variants row anyway), its
    edition and its format. No NUL can occur in any of the three (JSON escapes control
    characters), so none can run into the next.
    """
    return hashlib.sha256(f"{edition_id}\0{fmt}\0{selection_json}".encode()).hexdigest()[:32]


class SelectionJson:
    """A selection as JSON text, ``[["paper id", "why-line"], ...]``, each pick encoded
    once per planning run.

    A chunk's hundreds of selections share a few thousand picks, so a reader costs ten
    lookups and a join instead of encoding twenty strings (and the repr the key was made
    from before): ~14 instead of ~31 us a reader, measured on a slow machine.
    """

    def __init__(self, limit: int = PICKS_REMEMBERED) -> None:
        self._limit = limit
        self._encoded: dict[Pick, str] = {}

    def __call__(self, picks: Selection) -> str:
        encoded = self._encoded
        parts = []
        for pick in picks:
            if (text := encoded.get(pick)) is None:
                if len(encoded) >= self._limit:  # why-lines quote titles: bound what is kept
                    encoded.clear()
                text = encoded[pick] = json.dumps(pick)
            parts.append(text)
        return "[" + ",".join(parts) + "]"
