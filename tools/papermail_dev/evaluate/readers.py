"""Simulated readers: hidden interests, the topics they would type, how they click.

A reader is interested in one to three arXiv primary categories (hidden from every
system: it is the answer key). On sign-up they type two or three topics, the words a
person in those fields would use (:data:`TOPICS`; for a category not in the table, the
words its own papers' titles use most, compared with the rest of the corpus). Each day
they read their email and click "More like this" on some papers in their fields and
"Less like this" on some outside them: a probability per card, not every card.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from papermail_dev.evaluate.corpus import CorpusPaper

# What a person interested in a category would type as topics, most likely first.
TOPICS: dict[str, tuple[str, ...]] = {
    "cs.AI": ("AI agents", "reasoning", "planning", "knowledge representation"),
    "cs.AR": ("computer architecture", "hardware accelerators", "FPGA"),
    "cs.CC": ("computational complexity", "lower bounds"),
    "cs.CE": ("computational engineering", "simulation", "finite element"),
    "cs.CG": ("computational geometry",),
    "cs.CL": ("language models", "NLP", "machine translation", "LLM"),
    "cs.CR": ("security", "privacy", "cryptography", "adversarial attacks"),
    "cs.CV": ("computer vision", "image segmentation", "object detection", "video"),
    "cs.CY": ("AI ethics", "education", "fairness", "policy"),
    "cs.DB": ("databases", "query optimization", "data management"),
    "cs.DC": ("distributed systems", "parallel computing", "cloud", "HPC"),
    "cs.DL": ("digital libraries", "scholarly communication"),
    "cs.DM": ("discrete mathematics", "combinatorics", "graphs"),
    "cs.DS": ("algorithms", "data structures", "approximation algorithms"),
    "cs.ET": ("emerging technologies", "neuromorphic computing"),
    "cs.FL": ("formal languages", "automata"),
    "cs.GR": ("computer graphics", "rendering", "3D reconstruction", "animation"),
    "cs.GT": ("game theory", "mechanism design", "auctions"),
    "cs.HC": ("human-computer interaction", "user study", "accessibility", "visualization"),
    "cs.IR": ("information retrieval", "recommender systems", "search", "RAG"),
    "cs.IT": ("information theory", "coding theory", "channel capacity"),
    "cs.LG": ("machine learning", "deep learning", "reinforcement learning", "optimization"),
    "cs.LO": ("logic", "formal verification", "type theory"),
    "cs.MA": ("multi-agent systems", "multi-agent", "agents"),
    "cs.MM": ("multimedia", "multimodal", "audio-visual"),
    "cs.MS": ("mathematical software", "numerical libraries"),
    "cs.NE": ("evolutionary algorithms", "spiking neural networks", "neuroevolution"),
    "cs.NI": ("networking", "wireless networks", "5G", "network protocols"),
    "cs.OS": ("operating systems", "kernels"),
    "cs.PF": ("performance evaluation", "benchmarking"),
    "cs.PL": ("programming languages", "compilers", "type systems"),
    "cs.RO": ("robotics", "robot learning", "manipulation", "autonomous driving"),
    "cs.SC": ("symbolic computation", "computer algebra"),
    "cs.SD": ("audio", "speech", "music", "sound"),
    "cs.SE": ("software engineering", "code generation", "program repair", "testing"),
    "cs.SI": ("social networks", "graph mining", "misinformation"),
    "cs.SY": ("control systems", "control", "power systems"),
    "eess.AS": ("speech recognition", "speech", "audio processing"),
    "eess.IV": ("image processing", "medical imaging", "MRI"),
    "eess.SP": ("signal processing", "wireless communication", "radar", "MIMO"),
    "eess.SY": ("control systems", "power grid", "model predictive control"),
    "math.NA": ("numerical analysis", "finite element", "numerical methods"),
    "math.OC": ("optimization", "optimal control", "convex optimization"),
    "math.PR": ("probability", "stochastic processes"),
    "math.ST": ("statistics", "estimation", "hypothesis testing"),
    "physics.comp-ph": ("computational physics", "molecular dynamics"),
    "physics.med-ph": ("medical physics", "radiotherapy"),
    "physics.soc-ph": ("social physics", "complex networks"),
    "q-bio.BM": ("protein structure", "drug discovery", "molecules"),
    "q-bio.GN": ("genomics", "gene expression"),
    "q-bio.NC": ("neuroscience", "brain", "neural coding"),
    "q-bio.QM": ("computational biology", "bioinformatics"),
    "quant-ph": ("quantum computing", "quantum", "quantum machine learning"),
    "stat.ME": ("statistical methods", "causal inference", "bayesian"),
    "stat.ML": ("statistical learning", "bayesian", "causal inference", "kernel methods"),
}

_WORD = re.compile(r"[a-z][a-z-]{3,}")
# Title words too common across every field to say which one a paper is in.
_GENERIC = (
    "using with from towards toward based learning model models approach method methods "
    "via through their between into under over analysis data large efficient novel study "
    "framework system systems network networks neural deep multi task tasks robust "
    "improving improved generation benchmark evaluation"
)
_COMMON = frozenset(_GENERIC.split())


def fallback_topics(category: str, corpus: Sequence[CorpusPaper], *, n: int = 3) -> tuple[str, ...]:
    """Words a category's titles use far more than the rest of the corpus's titles."""
    inside: Counter[str] = Counter()
    everywhere: Counter[str] = Counter()
    for paper in corpus:
        words = set(_WORD.findall(paper.title.lower())) - _COMMON
        everywhere.update(words)
        if paper.primary == category:
            inside.update(words)
    total = len(corpus) or 1
    # How often in the category, times how rare in the corpus (tf-idf on titles).
    ranked = sorted(
        inside,
        key=lambda w: (-inside[w] * math.log(total / everywhere[w]), w),
    )
    chosen = tuple(w for w in ranked if inside[w] >= 2)[:n]
    return chosen or tuple(ranked[:n]) or (category,)


@dataclass(frozen=True, slots=True)
class SimReader:
    number: int
    interests: frozenset[str]  # hidden primary categories
    topics: tuple[str, ...]  # what they typed

    def wants(self, paper: CorpusPaper) -> bool:
        return paper.primary in self.interests


def eligible_categories(counts: dict[str, int], *, editions: int, per_edition: float) -> list[str]:
    """Fields with enough papers that a reader of them has something most days."""
    floor = per_edition * max(1, editions)
    return sorted(c for c, n in counts.items() if n >= floor)


def draw_readers(
    n: int,
    *,
    counts: dict[str, int],
    categories: Sequence[str],
    corpus: Sequence[CorpusPaper],
    seed: int,
) -> list[SimReader]:
    """``n`` readers, each with 1–3 fields (bigger fields a little likelier) and 2–3 topics.

    A field's chance is proportional to the square root of its paper count: more
    people read cs.LG than cs.GT, but not 40 times more.
    """
    if not categories:
        raise ValueError("no category has enough papers for a simulated reader")
    weights = np.sqrt(np.array([counts[c] for c in categories], dtype=float))
    weights /= weights.sum()
    fallback: dict[str, tuple[str, ...]] = {}
    readers = []
    for number in range(n):
        rng = np.random.default_rng([seed, number])
        size = min(int(rng.integers(1, 4)), len(categories))
        picked = [
            categories[i] for i in rng.choice(len(categories), size, replace=False, p=weights)
        ]
        options = []
        for category in picked:
            words = TOPICS.get(category)
            if words is None:
                words = fallback.setdefault(category, fallback_topics(category, corpus))
            options.append(list(words))
        readers.append(
            SimReader(
                number, frozenset(picked), _typed_topics(options, int(rng.integers(2, 4)), rng)
            )
        )
    return readers


def _typed_topics(
    options: list[list[str]], count: int, rng: np.random.Generator
) -> tuple[str, ...]:
    """``count`` topics, one field after another, each field's likeliest words first-ish.

    A person types the obvious name of their main field first; which other words they
    add is a draw (earlier table entries likelier).
    """
    typed: list[str] = []
    pools = [list(words) for words in options]
    field = 0
    while len(typed) < count and any(pools):
        words = pools[field % len(pools)]
        field += 1
        if not words:
            continue
        chances = np.array([0.5**i for i in range(len(words))])
        word = words.pop(int(rng.choice(len(words), p=chances / chances.sum())))
        if word.casefold() not in {t.casefold() for t in typed}:
            typed.append(word)
    return tuple(typed)


@dataclass(frozen=True, slots=True)
class Clicks:
    p_like: float  # "More like this" on a card in the reader's fields
    p_dislike: float  # "Less like this" on a card outside them

    def react(
        self, reader: SimReader, shown: Sequence[CorpusPaper], rng: np.random.Generator
    ) -> tuple[list[CorpusPaper], list[CorpusPaper]]:
        liked: list[CorpusPaper] = []
        disliked: list[CorpusPaper] = []
        draws = rng.random(len(shown))
        for paper, draw in zip(shown, draws, strict=True):
            if reader.wants(paper):
                if draw < self.p_like:
                    liked.append(paper)
            elif draw < self.p_dislike:
                disliked.append(paper)
        return liked, disliked
