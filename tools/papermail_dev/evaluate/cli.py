"""The command line: ``papermail-eval CORPUS.jsonl`` / ``python -m papermail_dev.evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from papermail_dev.evaluate.corpus import CorpusError, load
from papermail_dev.evaluate.replay import EvalConfig, evaluate


def main(argv: Sequence[str] | None = None) -> int:
    defaults = EvalConfig()
    parser = argparse.ArgumentParser(
        prog="papermail-eval",
        description="Replay an arXiv corpus to simulated readers; precision@k per day for "
        "papermail's learned relevance, topic-match and trending-only.",
    )
    parser.add_argument("corpus", type=Path, help="JSONL, one paper a line (see docs/relevance.md)")
    parser.add_argument("--days", type=int, default=None, help="the first N editions (default all)")
    parser.add_argument("--readers", type=int, default=defaults.readers)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--k", type=int, default=defaults.k, help="papers per email")
    parser.add_argument(
        "--weight", type=float, default=defaults.weight, help="trending (0) .. for me (1)"
    )
    parser.add_argument("--p-like", type=float, default=defaults.p_like)
    parser.add_argument("--p-dislike", type=float, default=defaults.p_dislike)
    parser.add_argument(
        "--method",
        choices=("svm", "profile"),
        default=defaults.method,
        help="papermail's scorer (default: the one planning uses, the profile)",
    )
    parser.add_argument(
        "--supervised",
        action="store_true",
        help="also the reference curve of an SVM trained on every earlier paper's true label",
    )
    parser.add_argument(
        "--no-categories",
        dest="categories",
        action="store_false",
        help="papermail sees words only, as for a paper arXiv has not described",
    )
    parser.add_argument(
        "--timings", action="store_true", help="also time per-reader scoring on a 2,000-paper pool"
    )
    args = parser.parse_args(argv)
    for name in ("readers", "k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.days is not None and args.days < 1:
        parser.error("--days must be at least 1")
    if not 0 <= args.weight <= 1:
        parser.error("--weight must be within [0, 1]")

    try:
        corpus = load(args.corpus)
    except (OSError, CorpusError) as exc:
        print(f"papermail-eval: {exc}", file=sys.stderr)
        return 2
    config = EvalConfig(
        days=args.days,
        readers=args.readers,
        seed=args.seed,
        k=args.k,
        weight=args.weight,
        p_like=args.p_like,
        p_dislike=args.p_dislike,
        method=args.method,
        supervised=args.supervised,
        categories=args.categories,
    )
    try:
        report = evaluate(corpus, config)
    except ValueError as exc:
        print(f"papermail-eval: {exc}", file=sys.stderr)
        return 2
    report["corpus"] = str(args.corpus)
    if args.timings:
        from papermail_dev.evaluate.timing import measure

        report["timings"] = measure(corpus, seed=args.seed, categories=args.categories)
    print("\n".join(table(report)))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")
    return 0


def table(report: dict[str, Any]) -> list[str]:
    """The three curves per day, the ceiling beside them, then the checkpoint's ratios."""
    p = report["parameters"]
    # Of the day's top k trending (everyone's list), how many papermail's email still has.
    kept = f"trending top-{p['k']} kept"
    lines = [
        f"{report.get('corpus', 'corpus')}: {p['papers']} papers, {p['editions']} editions, "
        f"{p['readers']} readers, seed {p['seed']}, k {p['k']}, weight {p['weight']}, "
        f"method {p['method']}, p_like {p['p_like']}, p_dislike {p['p_dislike']}",
        "",
        f"{'ed':>2}  {'day':<10} {'papers':>6}  {'papermail':>9}  {'topic-match':>11}  "
        f"{'trending':>8}  {'ceiling':>7}  {'feedback/reader':>15}  {kept}"
        + (f"  {'supervised':>10}" if p.get("supervised") else ""),
    ]
    for row in report["days"]:
        lines.append(
            f"{row['edition']:>2}  {row['day']:<10} {row['papers']:>6}  {row['papermail']:>9.3f}  "
            f"{row['topic_match']:>11.3f}  {row['trending']:>8.3f}  {row['ceiling']:>7.3f}  "
            f"{row['feedback_per_reader']:>15.2f}  {row['trending_kept']:>{len(kept)}.2f}"
            + (f"  {row['supervised']:>10.3f}" if "supervised" in row else "")
        )
    s = report["summary"]
    at = s["at_checkpoint"]
    lines += [
        "",
        f"edition {s['checkpoint_edition']} ({s['checkpoint_day']}, after "
        f"{s['feedback_days_before_it']} days of feedback): papermail {at['papermail']:.3f} = "
        f"{_times(s['papermail_over_topic_match'])} topic-match, "
        f"{_times(s['papermail_over_trending'])} trending",
    ]
    if timings := report.get("timings"):
        lines += [
            "",
            f"timings on a {timings['pool']}-paper pool ({timings['features']} features):",
        ]
        lines.append(f"  fit the pool (tf-idf), once per edition: {timings['fit_pool_ms']} ms")
        first = timings["first_sight"]
        lines.append(
            f"  first sight, once per edition: a topic {first['topic_median_ms']:.3f} ms, "
            f"a rated paper {first['rated_paper_median_ms']:.3f} ms (median)"
        )
        for key in ("cold_start", "feedback_svm", "feedback_profile"):
            t = timings[key]
            lines.append(
                f"  {key:<17} score {t['score_median_ms']:.3f} ms, score + choose "
                f"{t['score_and_choose_median_ms']:.3f} ms median "
                f"({t['score_and_choose_p90_ms']:.3f} ms p90)"
            )
    return lines


def _times(ratio: float | None) -> str:
    return "n/a ×" if ratio is None else f"{ratio:.2f}×"
