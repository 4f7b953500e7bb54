"""arXiv category codes papermail knows, with their human names.

The codes are arXiv's (https://arxiv.org/category_taxonomy); this table is the subset
papermail fetches and shows. A code not listed here is refused by the settings and the
CLI, so a typo ("cs.Cv") fails loudly instead of fetching nothing every day.
"""

from __future__ import annotations

from collections.abc import Iterable

CATEGORIES: dict[str, str] = {
    # Computer Science
    "cs.AI": "Artificial Intelligence",
    "cs.AR": "Hardware Architecture",
    "cs.CC": "Computational Complexity",
    "cs.CE": "Computational Engineering, Finance, and Science",
    "cs.CG": "Computational Geometry",
    "cs.CL": "Computation and Language",
    "cs.CR": "Cryptography and Security",
    "cs.CV": "Computer Vision and Pattern Recognition",
    "cs.CY": "Computers and Society",
    "cs.DB": "Databases",
    "cs.DC": "Distributed, Parallel, and Cluster Computing",
    "cs.DL": "Digital Libraries",
    "cs.DM": "Discrete Mathematics",
    "cs.DS": "Data Structures and Algorithms",
    "cs.ET": "Emerging Technologies",
    "cs.FL": "Formal Languages and Automata Theory",
    "cs.GL": "General Literature",
    "cs.GR": "Graphics",
    "cs.GT": "Computer Science and Game Theory",
    "cs.HC": "Human-Computer Interaction",
    "cs.IR": "Information Retrieval",
    "cs.IT": "Information Theory",
    "cs.LG": "Machine Learning",
    "cs.LO": "Logic in Computer Science",
    "cs.MA": "Multiagent Systems",
    "cs.MM": "Multimedia",
    "cs.MS": "Mathematical Software",
    "cs.NA": "Numerical Analysis",
    "cs.NE": "Neural and Evolutionary Computing",
    "cs.NI": "Networking and Internet Architecture",
    "cs.OH": "Other Computer Science",
    "cs.OS": "Operating Systems",
    "cs.PF": "Performance",
    "cs.PL": "Programming Languages",
    "cs.RO": "Robotics",
    "cs.SC": "Symbolic Computation",
    "cs.SD": "Sound",
    "cs.SE": "Software Engineering",
    "cs.SI": "Social and Information Networks",
    "cs.SY": "Systems and Control",
    # Electrical Engineering and Systems Science
    "eess.AS": "Audio and Speech Processing",
    "eess.IV": "Image and Video Processing",
    "eess.SP": "Signal Processing",
    "eess.SY": "Systems and Control",
    # Statistics, Mathematics, Quantitative Biology
    "stat.ML": "Machine Learning (Statistics)",
    "stat.ME": "Methodology",
    "math.OC": "Optimization and Control",
    "q-bio.NC": "Neurons and Cognition",
}


# arXiv's archives (what a code names before its dot), to group the table on the forms.
ARCHIVES: dict[str, str] = {
    "cs": "Computer Science",
    "eess": "Electrical Engineering and Systems Science",
    "stat": "Statistics",
    "math": "Mathematics",
    "q-bio": "Quantitative Biology",
}


def category_name(code: str) -> str | None:
    return CATEGORIES.get(code)


def by_archive() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(archive name, [(code, name), ...]), ...] in the table's order, for a form."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for code, name in CATEGORIES.items():
        groups.setdefault(ARCHIVES[code.split(".", 1)[0]], []).append((code, name))
    return list(groups.items())


def unknown_categories(codes: Iterable[str]) -> list[str]:
    """The codes that are not in the table, in the order given (case matters: cs.CV)."""
    return [code for code in codes if code not in CATEGORIES]


def parse_categories(text: str) -> list[str]:
    """ "cs.LG, cs.CV" -> ["cs.LG", "cs.CV"]: split on commas and spaces, de-duplicated.

    Raises ValueError naming every unknown code, and if nothing is left.
    """
    codes: list[str] = []
    for part in text.replace(",", " ").split():
        if part not in codes:
            codes.append(part)
    unknown = unknown_categories(codes)
    if unknown:
        raise ValueError(
            f"unknown arXiv categor{'y' if len(unknown) == 1 else 'ies'}: {', '.join(unknown)} "
            "(codes look like cs.CV or stat.ML)"
        )
    if not codes:
        raise ValueError("names no arXiv category")
    return codes
