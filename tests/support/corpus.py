"""A small generated corpus of the shared corpus's shape (../shared/corpus/README.md):
the evaluation's and the bench's tests read it instead of the real one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from papermail_dev.evaluate.readers import TOPICS

# Eight fields whose papers use words of their own: interests are separable from text.
# The words a reader types for a field (readers.TOPICS) are in only a fifth of its papers,
# so stated topics find a few and clicks must teach the rest. astro-ph.GA is not in the
# topic table: its readers' topics come from its titles.
VOCABULARY = {
    "cs.RO": "grasping gripper locomotion legged actuator kinematics quadruped teleoperation",
    "cs.CV": "pixel segmentation camera depth occlusion convolutional stereo optical",
    "cs.CL": "translation tokens corpus dialogue parsing summarization lexical syntax",
    "cs.CR": "encryption cipher malware intrusion adversary leakage ransomware firewall",
    "cs.SE": "refactoring compiler debugging repository commits bugs regression continuous",
    "quant-ph": "qubit entanglement superconducting decoherence photonic hamiltonian fidelity",
    "math.NA": "discretization galerkin convergence quadrature mesh stiffness interpolation",
    "astro-ph.GA": "galaxy stellar halo redshift spiral luminosity quasar nebula",
}
SHARED = "method results propose experiments performance approach evaluate baseline data model"
DAYS = ("2025-01-06", "2025-01-07", "2025-01-08", "2025-01-09", "2025-01-10", "2025-01-13")
PER_DAY = 8 * 10


def write_corpus(path: Path, *, per_field: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    number = 0
    for day in DAYS:
        for field, words in VOCABULARY.items():
            own = words.split()
            typed = TOPICS.get(field, ())
            for _ in range(per_field):
                number += 1
                title = " ".join(rng.choice(own, 3, replace=False))
                abstract = list(rng.choice(own, 15)) + list(rng.choice(SHARED.split(), 15))
                if typed and rng.random() < 0.2:
                    abstract.append(str(rng.choice(typed)))
                rng.shuffle(abstract)
                lines.append(
                    {
                        "id": f"2501.{number:05d}",
                        "title": f"Towards {title}",
                        "abstract": " ".join(abstract),
                        "authors": [f"Author {rng.integers(0, 500)}", "A. Nother"],
                        "categories": [field],
                        "primary": field,
                        "listed": day,
                    }
                )
    # A weekend crawl with two stragglers: rolls into Monday's edition.
    for straggler in range(2):
        lines.append({**lines[straggler], "id": f"2501.9{straggler:04d}", "listed": "2025-01-11"})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path
