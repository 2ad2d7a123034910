#!/usr/bin/env bash
# Builds the datasync wheel (maturin, from the crate at the repository root) into a
# virtualenv under bindings/python/.venv and runs the pytest suite.
# The generated Python module is never committed: maturin generates it into every
# wheel with the crate's own uniffi-bindgen, so it always matches the library.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "pytest>=7"
# --force-reinstall: the version does not change between builds of a checkout.
"$venv/bin/python" -m pip install --force-reinstall --no-deps "$here"

cd "$here"
# Import the installed wheel, never the source tree.
exec "$venv/bin/python" -m pytest -o faulthandler_timeout=120 -p no:cacheprovider "$@" tests
