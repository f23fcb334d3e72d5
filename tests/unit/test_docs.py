"""The docs: the site builds strictly, the reference names every setting, and every path,
module and link that README.md and docs/*.md name exists.

``mkdocs build --strict`` fails on a broken link between pages, a missing anchor or a module
that ``::: module`` can no longer find; the checks here cover what it cannot see: README.md
(not part of the site), and the repository paths and Python names written in backticks.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import orjson
import pytest

from streamtune.bench.results import BEGIN, END, RESULTS, render_table
from streamtune.core.settings import Settings
from tests.conftest import REPO

DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
#: Top-level folders whose paths the docs may name; anything else is not checked as a path.
SKIP_DIRS = {".git", ".venv", "site", "build", "dist", "__pycache__", ".pytest_cache",
             ".ruff_cache", ".hypothesis", ".streamtune", ".gl", ".whl"}  # fmt: skip
OURS = ("schemas", "streams", "models", "streamtune", "tests")


@cache
def _hooks():  # docs/hooks.py is not a package module: load it by path
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as CI builds it: ``mkdocs build --strict`` (a warning is an error)."""
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed (requirements.lock pins it; run ops/venv.sh)")
        pytest.skip("mkdocs is not installed (run ops/venv.sh)")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_the_site_builds_strictly(site):
    assert (site / "index.html").is_file()
    for page in DOCS.glob("*.md"):
        name = page.stem
        assert (site / ("index.html" if name == "index" else f"{name}/index.html")).is_file()


def test_every_setting_is_in_the_reference(site):
    html = (site / "configuration" / "index.html").read_text()
    missing = [n for n in Settings.model_fields if f"STREAMTUNE_{n.upper()}</code>" not in html]
    assert missing == [], "settings missing from the configuration reference"


def test_every_setting_has_a_description():
    # The reference is generated from these: a field without one would be a blank row.
    blank = [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert blank == [], "give these Settings fields a description="


def test_the_reference_is_generic():
    # A Settings split into per-layer classes, one of them nested, documents the same way.
    from pydantic import BaseModel
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Kafka(BaseSettings):
        # --- Kafka: where the broker is ----------------------------------------
        bootstrap: str = described("", "host:port list")

    class Tuning(BaseModel):
        batch: int = described(8, "records per batch", ge=1)

    class Split(Kafka):
        model_config = SettingsConfigDict(env_prefix="ST_", env_nested_delimiter="__")
        # --- Serving --------------------------------------------------------------
        tuning: Tuning = Tuning()
        precision: str | None = described(None, "fp32 or bf16")

    rows = {r.env: r for r in _hooks().settings_docs(Split)}
    assert list(rows) == ["ST_BOOTSTRAP", "ST_TUNING__BATCH", "ST_PRECISION"]
    assert rows["ST_BOOTSTRAP"].section == "Kafka: where the broker is"
    assert rows["ST_PRECISION"].section == "Serving"
    assert (rows["ST_TUNING__BATCH"].type, rows["ST_TUNING__BATCH"].default) == ("int (≥ 1)", "`8`")
    assert rows["ST_PRECISION"].default == "unset"


def described(default, description, **kwargs):
    from pydantic import Field

    return Field(default, description=description, **kwargs)


def test_docstrings_become_markdown():
    to_md = _hooks().rest_to_markdown
    assert (
        to_md("See :func:`streams.drift.x` and :class:`~a.B`.")
        == "See ``streams.drift.x`` and ``a.B``."
    )
    assert to_md("Run it::\n\n    faust -A app") == "Run it:\n\n    faust -A app"
    assert (
        to_md("Text.\n>>> 1 + 1\n2\n\nAfter.") == "Text.\n\n```pycon\n>>> 1 + 1\n2\n```\n\n\nAfter."
    )
    assert to_md("``term``\n    its meaning,\n    two lines\n``next``\n    more") == (
        "``term``\n:   its meaning,\n    two lines\n\n``next``\n:   more\n"
    )


def test_the_published_bench_table_is_current():
    # The site renders it again at build time; this keeps the copy GitHub shows current too.
    text = (DOCS / "benchmarks.md").read_text()
    block = text.partition(BEGIN)[2].partition(END)[0].strip()
    expected = render_table(orjson.loads(RESULTS.read_bytes())).strip()
    assert block == expected, "run `python ops/render_bench_table.py`"


# --- Every path, module and link the docs name exists --------------------------------------

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"``(.+?)``|`([^`\n]+)`")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_DOTTED = re.compile(rf"^(?:{'|'.join(OURS)})(?:\.[A-Za-z_]\w*)+$")


@cache
def _top_dirs() -> tuple[str, ...]:
    names = (p.name for p in REPO.iterdir() if p.is_dir())
    return tuple(n for n in names if n not in SKIP_DIRS and not n.endswith(".egg-info"))


@cache
def _python_files() -> tuple[str, ...]:
    return tuple(
        p.relative_to(REPO).as_posix()
        for top in _top_dirs()
        for p in (REPO / top).rglob("*.py")
        if "__pycache__" not in p.parts
    )


def _path_exists(token: str) -> bool:
    token = token.rstrip("/.,;:")
    return any(REPO.glob(token)) if "*" in token else (REPO / token).exists()


def _defines(module_file: Path, name: str) -> bool:
    tree = ast.parse(module_file.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return True
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        elif isinstance(node, ast.Import | ast.ImportFrom) and any(
            (a.asname or a.name.split(".")[0]) == name for a in node.names
        ):
            return True
    return False


def _name_exists(dotted: str) -> bool:
    """``streams.drift.examples_since_change``: a module of ours, then (optionally) one name
    it defines at top level, or a class attribute after that. Found by reading, not importing."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:cut])
        module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if module.is_file():
            rest = parts[cut:]
            return not rest or (_defines(module, rest[0]) and len(rest) <= 2)
    return False


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "").strip().lower())
    return re.sub(r"[\s-]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text())
    return {_slug(m) for m in re.findall(r"^#+ (.+?)\s*$", text, re.M)}


def problems(page: Path, text: str | None = None) -> list[str]:
    """What ``page`` names that does not exist: repository paths, our Python names, relative
    links (and, outside the site, their anchors)."""
    text = page.read_text() if text is None else text
    tops = "|".join(re.escape(t) for t in _top_dirs())
    found = []
    links = [m[1] or m[2] for m in _LINK.finditer(text)]
    text = _LINK.sub("", text)  # link targets are checked as links below
    path_re = re.compile(rf"(?<![\w./~<>$-])((?:{tops})/[\w./*-]*)")
    for token in path_re.findall(text):
        if not _path_exists(token):
            found.append(f"path {token}")
    prose = _FENCE.sub("", text)
    for match in _CODE.finditer(prose):
        code = (match[1] or match[2]).strip()
        if code.endswith(".py") and not code.startswith(tuple(f"{t}/" for t in _top_dirs())):
            if " " not in code and not any(f.endswith(f"/{code}") for f in _python_files()):
                found.append(f"file {code}")
        elif _DOTTED.match(code) and not _name_exists(code):
            found.append(f"name {code}")
    for target in links:
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            found.append(f"link {target}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            found.append(f"anchor {target}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_path_the_docs_name_exists(page):
    assert problems(page) == []


def test_the_checks_catch_what_is_not_there():
    # The README once named `streamtune/settings.py`, which had moved to streamtune/core/.
    text = (
        "See `streamtune/settings.py`, streams/nowhere.py and `streamtune/core/settings.py`; "
        "`join_rules.py` and `join.py`; `streams.drift.nothing_here`, `streams.drift.DriftMonitor`"
        " and `models.gone`; [ok](docs/operating.md#roll-back), [gone](docs/nowhere.md), "
        "[bad anchor](docs/operating.md#no-such-heading), ![img](docs/dashboard.png).\n"
        "```bash\nstreamtune replay data/tfns/valid.csv data/tfns/missing.csv\n```\n"
    )
    assert problems(REPO / "README.md", text) == [
        "path streamtune/settings.py",
        "path streams/nowhere.py",
        "path data/tfns/missing.csv",
        "file join_rules.py",
        "name streams.drift.nothing_here",
        "name models.gone",
        "link docs/nowhere.md",
        "anchor docs/operating.md#no-such-heading",
    ]
