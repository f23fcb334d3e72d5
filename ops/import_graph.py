"""Print which of streamtune's packages each package imports, one line per package.

Run from the repository root::

    python ops/import_graph.py

Every import counts, top-level or inside a function (a lazy import is still an arrow). A
module that imports by name (``importlib.import_module("streamtune.bench.x")``) shows that
arrow as ``(by name)``. ``tests/unit/test_layout.py`` enforces the rules; this shows them.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: The packages of the graph, in the order of the layers (a module counts as a package).
PACKAGES = (
    "schemas",
    "streamtune.core",
    "streams",
    "models",
    "streamtune.serve",
    "streamtune.train",
    "streamtune.replay",
    "streamtune.model_updates",
    "streamtune.scenario",
    "streamtune.local_service",
    "streamtune.cli",
    "streamtune.bench",
)


def package_of(module: str) -> str | None:
    """The package of the graph that ``module`` belongs to (the longest that matches)."""
    found = [p for p in PACKAGES if module == p or module.startswith(p + ".")]
    return max(found, key=len) if found else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> tuple[set[str], set[str]]:
    """What ``path`` imports (``from a import b`` gives ``a`` and ``a.b``), and the module
    names it holds as strings to import by name (``"a.b"`` or ``"a.b:function"``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    by_name: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    uses_importlib = "importlib" in {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    for node in ast.walk(tree):
        if uses_importlib and isinstance(node, ast.Constant) and isinstance(node.value, str):
            module = node.value.partition(":")[0]
            if "." in module and module.replace(".", "").replace("_", "").isalnum():
                by_name.add(module)
        elif isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                root = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{root}.{base}" if base else root
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return out, by_name


def graph() -> dict[str, set[str]]:
    """Package -> the packages it imports (``"<package> (by name)"`` for by-name imports)."""
    edges: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for path in sorted(REPO.glob("*/**/*.py")):
        if path.relative_to(REPO).parts[0] in ("tests", "ops", ".venv"):
            continue
        source = package_of(module_name(path))
        if source is None:
            continue
        names, by_name = imported(path)
        for name in names:
            target = package_of(name)
            if target is not None and target != source:
                edges[source].add(target)
        for name in by_name:
            target = package_of(name)
            if target is not None and target != source and target not in edges[source]:
                edges[source].add(f"{target} (by name)")
    return edges


def main() -> int:
    edges = graph()
    width = max(map(len, PACKAGES))
    for package in PACKAGES:
        targets = sorted(edges[package], key=lambda t: PACKAGES.index(t.split()[0]))
        print(f"{package:<{width}}  -> {', '.join(targets) if targets else '(nothing of ours)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
