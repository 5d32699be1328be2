"""Structure figures read from the code's imports: import circles, layer breaches, lines per folder,
modules over 400 lines. ``python bench/structure.py``; the rules themselves are tests/test_structure.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from importgraph import cycles, folder_lines, read_graph  # noqa: E402


def main() -> None:
    g = read_graph()
    deep, alone, total = folder_lines(g)
    circles = cycles(g)
    print(f"modules: {len(g.files)}  lines: {total}  import circles: {len(circles)}")
    for c in circles:
        print("  circle:", " <-> ".join(c))
    print(f"\n{'folder':34s} {'alone':>7s} {'share':>6s} {'with sub-folders':>17s} {'share':>6s}")
    for folder in sorted(deep):
        a, d = alone[folder], deep[folder]
        print(f"{folder:34s} {a:7d} {a / total:6.1%} {d:17d} {d / total:6.1%}")
    big = sorted(((g.lines(m), m) for m in g.files if g.lines(m) > 400), reverse=True)
    print("\nmodules over 400 lines:", ", ".join(f"{m} ({n})" for n, m in big) or "none")


if __name__ == "__main__":
    main()
