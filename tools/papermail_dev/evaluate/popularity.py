"""A simulated popularity score: the corpus has no upvotes, so each paper gets some.

What Hugging Face's trending list sees is votes, and votes are heavy-tailed: most papers
get a handful, a few get hundreds. The simulation draws each paper's upvotes from a
log-normal whose centre depends only on the paper itself, never on any reader:

* its field's size in the corpus (the audience is ML-heavy: a cs.LG paper is seen by
  more people than a math.NT one), ``FIELD_GAIN`` per unit of log share;
* its team's size (big collaborations bring their own audience), ``TEAM_GAIN``;
* luck: ``SIGMA`` of log-normal noise, seeded by the paper id (order does not matter).

The trending list is then papermail's own ranking (``ranking.rank``) over those votes,
every paper of an edition the same age: the list everybody gets from a trending email.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from collections.abc import Sequence

import numpy as np

from papermail.pipeline import ranking
from papermail_dev.evaluate.corpus import CorpusPaper

MEDIAN_VOTES = 3.0  # a typical paper in the biggest field, team of one
FIELD_GAIN = 1.0
TEAM_GAIN = 0.5
SIGMA = 1.2


def upvotes(
    papers: Sequence[CorpusPaper], *, field_counts: dict[str, int], seed: int
) -> dict[str, int]:
    biggest = max(field_counts.values(), default=1)
    votes: dict[str, int] = {}
    for paper in papers:
        luck = np.random.default_rng([seed, zlib.crc32(paper.id.encode())]).standard_normal()
        centre = (
            math.log(MEDIAN_VOTES)
            + FIELD_GAIN * math.log(field_counts.get(paper.primary, 1) / biggest)
            + TEAM_GAIN * math.log(max(1, len(paper.authors)))
        )
        votes[paper.id] = int(math.exp(centre + SIGMA * luck))
    return votes


def trending(
    papers: Sequence[CorpusPaper], votes: dict[str, int], *, day: str
) -> list[ranking.Scored]:
    """papermail's trending order for an edition whose papers were all listed together."""
    listed = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    signals = [
        ranking.PaperSignals(
            paper_id=p.id, upvotes=votes[p.id], num_comments=0, github_stars=0, submitted_at=listed
        )
        for p in papers
    ]
    return ranking.rank(signals, now=listed + dt.timedelta(hours=12))
