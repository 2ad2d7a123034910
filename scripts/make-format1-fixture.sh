#!/usr/bin/env bash
# Regenerates tests/fixtures/format1/: a directory tier written by today's code
# (format 1) and expected.json, what that code reads back from it. Run it only while
# the on-disk format is still format 1; once the format changes, the committed
# fixture is the record of the old bytes and must stay as it is.
#
# The entities and tombstones come out the same on every run (the example sets the
# instance's clock); only the metadata's own `updatedAt` stamps take the wall clock.
# The lock file is left out: opening the directory creates it again.
set -euo pipefail
cd "$(dirname "$0")/.."

out=tests/fixtures/format1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo run --quiet --example make_format1_fixture -- "$work/tier" "$work/expected.json"
rm -f "$work/tier/datasync.lock"
if [ -e "$work/tier/recovering" ] || [ -e "$work/tier/corrupt" ]; then
    echo "the tier was not closed cleanly: $(ls "$work/tier")" >&2
    exit 1
fi

rm -rf "$out/tier" "$out/expected.json"
mkdir -p "$out"
cp -R "$work/tier" "$out/tier"
cp "$work/expected.json" "$out/expected.json"
echo "wrote $out/tier and $out/expected.json"
