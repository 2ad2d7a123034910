#!/usr/bin/env bash
# The sync server's tests: every suite of `cargo test -p datasync-server`. The
# PostgreSQL tests need a running cluster: scripts/postgres.sh starts one and exports
# DATASYNC_TEST_POSTGRES. Under CI=true a missing or unstartable PostgreSQL fails this
# stage; elsewhere the PostgreSQL tests print a SKIP: line and the directory-backend
# tests still run.
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if url="$(bash scripts/postgres.sh)"; then
    export DATASYNC_TEST_POSTGRES="$url"
    echo "server tests: PostgreSQL is running (DATASYNC_TEST_POSTGRES is set)"
else
    unset DATASYNC_TEST_POSTGRES
    if [ "${CI:-}" = "true" ]; then
        echo "server tests: PostgreSQL is required under CI=true and could not be started" >&2
        exit 1
    fi
    echo "SKIP: PostgreSQL server tests (no local PostgreSQL); directory-backend tests still run"
fi

# tests/cli.rs runs the `datasync` command, which lives next to the server binary.
cargo build --bin datasync

# Enough threads for the suites, few enough for a small machine.
cargo test -p datasync-server -- --test-threads 2
