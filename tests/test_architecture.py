"""The import rules of the layout, checked statically (``ast``; nothing is imported).

Layers: the shells (workers/, papermail.web, papermail.cli) sit on the wiring and
stage API (papermail.wiring, papermail.stages, papermail.dispatch), which sits on
the domain (everything else under src/papermail). The rules:

- domain-imports-shell: a domain module imports no web, CLI or task-queue framework
  and no shell: celery, kombu, redbeat, fastapi, starlette, uvicorn, click, rich,
  workers, papermail.cli, papermail.web. papermail.ops.broker reads kombu's and
  redbeat's Redis layout on purpose and may import those two (never celery).
- runtime-imports-dev-tools: nothing under src/papermail imports papermail_dev, except
  papermail.cli.bench inside a function (it says how to install the tools when absent).
- workers-import-shell: workers/ imports neither papermail.cli nor papermail.web.
- import-cycle: papermail modules import each other without a cycle, counting
  module-level imports only (those under ``if TYPE_CHECKING:`` or inside a function
  run later, or never). An import is an edge to the module it names, not to that
  module's parent packages.

The first three count every import wherever it is: at module level, inside a function,
under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SHELLS = ("papermail.cli", "papermail.web", "papermail.__main__")
FORBIDDEN_IN_DOMAIN = (
    "celery",
    "kombu",
    "redbeat",
    "fastapi",
    "starlette",
    "uvicorn",
    "click",
    "rich",
    "workers",
    "papermail.cli",
    "papermail.web",
    # papermail_dev: forbidden everywhere under src/papermail, see runtime-imports-dev-tools.
)
ALLOWED_IN_DOMAIN = {"papermail.ops.broker": ("kombu", "redbeat")}
DEV_TOOLS = "papermail_dev"
DEV_TOOLS_ALLOWED_IN_FUNCTIONS = {"papermail.cli.bench"}
FORBIDDEN_IN_WORKERS = ("papermail.cli", "papermail.web")

# --- reading imports ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement. ``targets`` are the modules it names, resolved: "x.y" for
    `import x.y`; "x" for `from x import name`; "x.sub" for `from x import sub` when x.sub
    is a module of the tree; relative imports made absolute."""

    module: str  # the importing module
    targets: tuple[str, ...]
    line: int
    statement: str
    context: str  # "module level", "in function f", "under TYPE_CHECKING"

    @property
    def runs_at_import(self) -> bool:
        return self.context == "module level"

    def where(self) -> str:
        return f"line {self.line}, {self.context}: `{self.statement}`"


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    module: str
    imported: str
    detail: str

    @property
    def key(self) -> str:
        return f"{self.rule}: {self.module} -> {self.imported}"

    def __str__(self) -> str:
        return f"[{self.rule}] {self.module} imports {self.imported} ({self.detail})"


def module_files(base: Path, package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under package_dir (names relative to base)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join([*base, *([node.module] if node.module else [])])


def read_imports(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import in the file, with where it sits; ``known`` resolves `from x import sub`."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, context: str) -> None:
        if isinstance(node, ast.Import):
            targets = tuple(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = _resolve_from(module, is_package, node)
            subs = [f"{parent}.{a.name}" for a in node.names if f"{parent}.{a.name}" in known]
            # `from pkg import sub` imports the submodule; `from pkg import name` the package.
            named_only = len(subs) == len(node.names)
            targets = tuple(subs) if named_only else (parent, *subs)
        else:
            targets = ()
        if targets:
            statement = ast.get_source_segment(source, node) or ast.unparse(node)
            found.append(Import(module, targets, node.lineno, " ".join(statement.split()), context))
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.If) and _is_type_checking(node.test) and child in node.body:
                visit(child, "under TYPE_CHECKING")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                name = getattr(child, "name", "<lambda>")
                visit(child, context if context != "module level" else f"in function {name}")
            else:
                visit(child, context)

    visit(tree, "module level")
    return found


def _names(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


# --- the rules ------------------------------------------------------------------------------


@dataclass
class Tree:
    src: dict[str, Path]  # papermail modules
    workers: dict[str, Path]

    @classmethod
    def at(cls, root: Path) -> Tree:
        workers_dir = root / "workers"
        return cls(
            src=module_files(root / "src", root / "src" / "papermail"),
            workers=module_files(root, workers_dir) if workers_dir.is_dir() else {},
        )

    def imports(self, modules: dict[str, Path]) -> Iterator[Import]:
        known = set(self.src) | set(self.workers)
        for module, path in modules.items():
            yield from read_imports(module, path, known)


def is_domain(module: str) -> bool:
    return not any(_names(module, shell) for shell in SHELLS)


def forbidden_imports(tree: Tree) -> list[Violation]:
    found = []
    for imp in tree.imports(tree.src):
        for target in imp.targets:
            if is_domain(imp.module):
                allowed = ALLOWED_IN_DOMAIN.get(imp.module, ())
                for banned in FORBIDDEN_IN_DOMAIN:
                    if _names(target, banned) and banned not in allowed:
                        found.append(
                            Violation("domain-imports-shell", imp.module, target, imp.where())
                        )
            if _names(target, DEV_TOOLS) and not (
                imp.module in DEV_TOOLS_ALLOWED_IN_FUNCTIONS
                and imp.context.startswith("in function")
            ):
                found.append(
                    Violation("runtime-imports-dev-tools", imp.module, target, imp.where())
                )
    for imp in tree.imports(tree.workers):
        for target in imp.targets:
            for banned in FORBIDDEN_IN_WORKERS:
                if _names(target, banned):
                    found.append(Violation("workers-import-shell", imp.module, target, imp.where()))
    return _unique(found)


def import_cycles(tree: Tree) -> list[Violation]:
    """One violation per strongly connected component of the module-level import graph."""
    edges: dict[str, dict[str, Import]] = {m: {} for m in tree.src}
    for imp in tree.imports(tree.src):
        if imp.runs_at_import:
            for target in imp.targets:
                if target in edges and target != imp.module:
                    edges[imp.module].setdefault(target, imp)
    found = []
    for component in _strongly_connected(edges):
        cycle = _a_cycle(edges, component)
        steps = "; ".join(
            f"{a} {edges[a][b].where()}" for a, b in zip(cycle, cycle[1:], strict=False)
        )
        found.append(Violation("import-cycle", cycle[0], " -> ".join(cycle[1:]), steps))
    return found


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components of more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _a_cycle(edges: dict[str, dict[str, Import]], component: list[str]) -> list[str]:
    """The shortest cycle through the component's first module (breadth-first)."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(edges[node]):
            if child == start:
                return [*paths[node], start]
            if child in members and child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def _unique(violations: Iterable[Violation]) -> list[Violation]:
    return list(dict.fromkeys(violations))


def check(root: Path) -> list[Violation]:
    tree = Tree.at(root)
    return forbidden_imports(tree) + import_cycles(tree)


# --- the test -------------------------------------------------------------------------------


def test_the_import_rules_hold() -> None:
    violations = check(ROOT)
    assert not violations, "import rules broken:\n" + "\n".join(map(str, violations))


def test_the_checker_reads_the_real_tree() -> None:
    """Guards against a vacuous pass: the tree is where the checker looks."""
    tree = Tree.at(ROOT)
    assert {"papermail.stages", "papermail.cli.bench", "papermail.web"} <= set(tree.src)
    assert "workers.tasks" in tree.workers
    imports = list(tree.imports({"workers.tasks": tree.workers["workers.tasks"]}))
    assert any("papermail.stages" in imp.targets for imp in imports)


# --- the checker, on synthetic trees --------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BASE = {
    "src/papermail/__init__.py": "",
    "src/papermail/cli/__init__.py": "import click\nfrom papermail import web\n",
    "src/papermail/web/__init__.py": "import fastapi\n",
    "src/papermail/ops/__init__.py": "",
    "src/papermail/ops/broker.py": "import kombu\nfrom redbeat import schedulers\n",
    "workers/__init__.py": "",
    "workers/tasks.py": "import celery\nfrom papermail import models\n",
    "src/papermail/models.py": "import sqlalchemy\n",
}


def test_a_clean_synthetic_tree_passes(tmp_path: Path) -> None:
    files = {
        **BASE,
        "src/papermail/cli/bench.py": "def bench():\n    from papermail_dev.bench import run\n",
    }
    assert check(write(tmp_path, files)) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"src/papermail/stages.py": "def later():\n    import celery.result\n"},
            "domain-imports-shell: papermail.stages -> celery.result",
        ),
        (
            {
                "src/papermail/pipeline/__init__.py": "",
                "src/papermail/pipeline/x.py": "from .. import web\n",
            },
            "domain-imports-shell: papermail.pipeline.x -> papermail.web",
        ),
        (
            {
                "src/papermail/models.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from rich.console import Console\n"
            },
            "domain-imports-shell: papermail.models -> rich.console",
        ),
        (
            {"src/papermail/ops/jobs.py": "from kombu import Queue\n"},
            "domain-imports-shell: papermail.ops.jobs -> kombu",
        ),
        (
            {"src/papermail/ops/broker.py": "import celery\n"},
            "domain-imports-shell: papermail.ops.broker -> celery",
        ),
        (
            {"src/papermail/cli/status.py": "import papermail_dev.smtpsink\n"},
            "runtime-imports-dev-tools: papermail.cli.status -> papermail_dev.smtpsink",
        ),
        (
            {"src/papermail/cli/bench.py": "from papermail_dev.bench import run\n"},
            "runtime-imports-dev-tools: papermail.cli.bench -> papermail_dev.bench",
        ),
        (
            {"workers/dispatch.py": "def f():\n    from papermail.cli.common import console\n"},
            "workers-import-shell: workers.dispatch -> papermail.cli.common",
        ),
    ],
)
def test_a_forbidden_import_is_found(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    found = check(write(tmp_path, {**BASE, **files}))
    assert [v.key for v in found] == [expected]
    assert "line " in str(found[0])


def test_a_cycle_is_found_and_deferred_imports_break_none(tmp_path: Path) -> None:
    files = {
        **BASE,
        # a -> b (a submodule named by `from papermail import b`) -> c -> a: a cycle
        "src/papermail/a.py": "from papermail import b\n",
        "src/papermail/b.py": "from .c import thing\n",
        "src/papermail/c.py": "import papermail.a\nthing = 1\n",
        # d <-> e, but one side only under TYPE_CHECKING or in a function: no cycle
        "src/papermail/d.py": "from papermail.e import E\n",
        "src/papermail/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from papermail.d import D\nclass E:\n    def f(self):\n        import papermail.d\n",
    }
    found = check(write(tmp_path, files))
    assert [v.key for v in found] == [
        "import-cycle: papermail.a -> papermail.b -> papermail.c -> papermail.a"
    ]
    assert "papermail.c line 1, module level: `import papermail.a`" in str(found[0])
