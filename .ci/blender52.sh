#!/usr/bin/env bash
# The Blender-side tests marked `each_blender`, run again on bpy 5.2 LTS (Python 3.13) in its own venv,
# .venv313. The tiny server and the 4.5 reference render stay on the main install's Python 3.11 (.venv,
# or SEETHROUGH_MAIN_PYTHON). Without a Python 3.13 on the machine the pass is skipped, and says so.
# Deprecated bpy calls fail the pass (-W error::DeprecationWarning): they are next release's errors.
set -euo pipefail
cd "$(dirname "$0")/.."

BPY_VERSION=5.2.3
export SEETHROUGH_MAIN_PYTHON=${SEETHROUGH_MAIN_PYTHON:-$PWD/.venv/bin/python}
if [ ! -x "$SEETHROUGH_MAIN_PYTHON" ]; then
    echo "CI: the bpy $BPY_VERSION pass needs the main install's Python at $SEETHROUGH_MAIN_PYTHON" >&2
    exit 1
fi

# The newest pyenv 3.13 (pyenv itself may be off PATH in a non-interactive shell), else python3.13 on PATH.
pyenv_root=$( (pyenv root 2>/dev/null) || echo "${PYENV_ROOT:-$HOME/.pyenv}")
python313=$(find "$pyenv_root/versions" -maxdepth 3 -path '*/3.13*/bin/python3.13' 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$python313" ]; then
    python313=$(command -v python3.13 || true)
fi
if [ -z "$python313" ]; then
    echo "CI: SKIPPED the bpy $BPY_VERSION pass: no Python 3.13 on this machine (none in pyenv or on PATH)"
    exit 0
fi

start=$SECONDS
echo "CI: bpy $BPY_VERSION pass with $python313"
"$python313" -m venv .venv313
# The core's own requirements, read from pyproject.toml (the project itself requires Python 3.11).
requirements=$("$python313" -c \
    'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
mapfile -t requirements <<<"$requirements"
.venv313/bin/python -m pip install -q "bpy==$BPY_VERSION" "${requirements[@]}" "pytest>=8" "pytest-timeout>=2.3"
installed=$SECONDS
PYTHONPATH=$PWD .venv313/bin/python -m pytest -q -m each_blender \
    -W error::DeprecationWarning tests/blender
echo "CI: bpy $BPY_VERSION pass: venv $((installed - start)) s, tests $((SECONDS - installed)) s"
