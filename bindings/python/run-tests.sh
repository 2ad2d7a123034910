#!/usr/bin/env bash
# Builds the datasync wheel (scripts/build-wheel.sh: maturin, from the crate at the
# repository root), installs it into a virtualenv under bindings/python/.venv and
# runs the pytest suite; then installs the same wheel into a fresh virtualenv whose
# PATH has no cargo or rustc, and saves and reads through it (a wheel must install
# and work without Rust).
# The generated Python module is never committed: maturin generates it into every
# wheel with the crate's own uniffi-bindgen, so it always matches the library.
# The test wheel is a debug build (it reuses target/debug); DATASYNC_WHEEL_RELEASE=1
# tests a release build instead.
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
"$venv/bin/python" -m pip install --quiet "pytest>=7" "orjson>=3.9"

profile=(--debug)
[ "${DATASYNC_WHEEL_RELEASE:-0}" = 1 ] && profile=()
wheels="$(mktemp -d)"
fresh="$(mktemp -d)"
trap 'rm -rf "$wheels" "$fresh"' EXIT
wheel="$(bash "$root/scripts/build-wheel.sh" "${profile[@]}" "$wheels" | tail -n 1)"
echo "built $(basename "$wheel")"
# --force-reinstall: the version does not change between builds of a checkout.
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$wheel"

# test_http.py syncs through a real sync server, started by the test itself.
cargo build --manifest-path "$root/Cargo.toml" -p datasync-server
export DATASYNC_SERVER_BIN="$CARGO_TARGET_DIR/debug/datasync-server"

cd "$here"
# Import the installed wheel, never the source tree.
"$venv/bin/python" -m pytest -o faulthandler_timeout=120 -p no:cacheprovider "$@" tests

echo
echo "== the wheel in a fresh virtualenv without Rust"
# PATH without any directory that holds cargo or rustc (rustup's shims included).
bare=""
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    if [ -n "$d" ] && [ ! -e "$d/cargo" ] && [ ! -e "$d/rustc" ]; then
        bare="${bare:+$bare:}$d"
    fi
done
base_python="$("$python" -c 'import sys; print(sys.executable)')"
env -i HOME="$fresh" PATH="$bare" "$base_python" -m venv "$fresh/venv"
env -i HOME="$fresh" PATH="$fresh/venv/bin:$bare" "$fresh/venv/bin/python" -m pip install --quiet --no-index --no-deps "$wheel"
(cd "$fresh" && env -i HOME="$fresh" PATH="$fresh/venv/bin:$bare" "$fresh/venv/bin/python" -I - "$fresh/data") <<'EOF'
import shutil, sys
assert shutil.which("cargo") is None and shutil.which("rustc") is None, "Rust is still on PATH"
import datasync
assert "site-packages" in datasync.__file__, datasync.__file__
with datasync.open("app", local=datasync.DirectoryTier(sys.argv[1])) as ds:
    uid = ds.repo("User").save({"name": "from the wheel"})
with datasync.open("app", local=datasync.DirectoryTier(sys.argv[1])) as ds:
    assert ds.repo("User").get(uid)["name"] == "from the wheel"
print("wheel without Rust: saved and read back", uid)
EOF
