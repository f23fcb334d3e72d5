#!/usr/bin/env bash
# Make ./.venv ready for this checkout, cheaply after the first time.
#
# The heavy dependencies (torch alone is ~3 GB with its CUDA wheels) live in a shared
# environment under $STREAMTUNE_CACHE_DIR/venvs/, keyed by a hash of requirements.lock, so a new clone or CI run reuses it. ./.venv is a small per-checkout
# venv that sees those packages through a .pth file and holds the editable streamtune.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cache=${STREAMTUNE_CACHE_DIR:-$HOME/.cache/streamtune}
python=${PYTHON:-$(command -v python3.11 || command -v python3)}

"$python" - <<'PY' || { echo "streamtune needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
hash=$(sha256sum requirements.lock | cut -c1-16)
deps="$cache/venvs/py$pyver-$hash"

if [ ! -f "$deps/.complete" ]; then
    echo "==> installing dependencies into $deps (first run: downloads ~3 GB, takes a while)"
    rm -rf "$deps"
    mkdir -p "$cache/venvs"
    "$python" -m venv "$deps"
    "$deps/bin/python" -m pip install --progress-bar on -r requirements.lock
    touch "$deps/.complete"
fi

if [ "$(cat .venv/.deps 2>/dev/null || true)" != "$deps" ]; then
    echo "==> linking .venv to $deps"
    rm -rf .venv
    # No pip or setuptools of its own: it uses the shared ones, at the locked versions.
    "$python" -m venv --without-pip .venv
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    deps_site=$("$deps/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$deps_site" > "$site/_streamtune_deps.pth"
    # Tools the Makefile calls by name.
    for tool in ruff faust mkdocs; do ln -sf "$deps/bin/$tool" ".venv/bin/$tool"; done
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
    # Fails when pyproject.toml asks for something requirements.lock does not pin.
    .venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check >&2; rm -rf .venv; exit 1; }
    echo "$deps" > .venv/.deps
fi
