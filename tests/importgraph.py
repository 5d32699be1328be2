"""The package's import graph read from its source (every import statement, lazy ones and
``TYPE_CHECKING`` ones included): cycles, which rooms import which, and lines per folder.

Used by ``test_structure.py`` (the rules) and ``bench/structure.py`` (the figures).
"""

from __future__ import annotations

import ast
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "iqaflow"


@dataclass
class Graph:
    files: dict[str, Path]  # dotted module name -> file
    edges: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def lines(self, module: str) -> int:
        return len(self.files[module].read_text().splitlines())


def _name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_graph(root: Path = PACKAGE) -> Graph:
    g = Graph({_name(p, root): p for p in sorted(root.rglob("*.py"))})
    for mod, path in g.files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # ``from pkg import sub`` names a module when pkg.sub is one
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in g.files else node.module
                           for a in node.names]
            for t in targets:
                while t not in g.files and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in g.files and t != mod:
                    g.edges[mod].add(t)
    return g


def cycles(g: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in g.files:
        if start in index:
            continue
        work = [(start, iter(sorted(g.edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def folder_lines(g: Graph) -> tuple[Counter[str], Counter[str], int]:
    """(lines per folder with its sub-folders, lines per folder alone, total lines)."""
    deep: Counter[str] = Counter()
    alone: Counter[str] = Counter()
    total = 0
    for mod, path in g.files.items():
        n = g.lines(mod)
        total += n
        folder = str(path.parent.relative_to(PACKAGE.parent))
        alone[folder] += n
        parts = Path(folder).parts
        for k in range(1, len(parts) + 1):
            deep["/".join(parts[:k])] += n
    return deep, alone, total


def room(module: str) -> str:
    """The top-level room of a module: ``iqaflow.tasks.io.read`` -> ``tasks``; loose modules -> their name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]
