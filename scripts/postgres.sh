#!/usr/bin/env bash
# Ensures a local PostgreSQL is running, with a role `datasync` (password `datasync`,
# CREATEDB) and a database `datasync_test`, and prints its URL.
#
#   bash scripts/postgres.sh          prints the URL on stdout
#   source scripts/postgres.sh        also exports DATASYNC_TEST_POSTGRES
#
# It uses Debian's cluster tools (pg_lsclusters, pg_ctlcluster): initdb refuses to run
# as root, the Debian cluster does not. Exits (or returns) non-zero when no cluster
# can be found or started.

_datasync_pg() {
    if ! command -v pg_lsclusters >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "postgres.sh: no PostgreSQL cluster tools (install the Debian package postgresql)" >&2
        return 1
    fi
    local line ver name port status
    line="$(pg_lsclusters --no-header 2>/dev/null | head -n 1)"
    if [ -z "$line" ]; then
        echo "postgres.sh: no PostgreSQL cluster (pg_createcluster <version> main)" >&2
        return 1
    fi
    read -r ver name port status _ <<<"$line"
    if [ "$status" != "online" ]; then
        pg_ctlcluster "$ver" "$name" start >&2 || {
            echo "postgres.sh: cannot start cluster $ver/$name" >&2
            return 1
        }
    fi
    local i
    for i in $(seq 1 50); do
        if su postgres -c "psql -p $port -qAtc 'SELECT 1'" >/dev/null 2>&1; then
            break
        fi
        sleep 0.2
    done
    local sql
    sql="DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'datasync') THEN
    CREATE ROLE datasync LOGIN PASSWORD 'datasync' CREATEDB;
  END IF;
END \$\$;"
    su postgres -c "psql -p $port -qAt -v ON_ERROR_STOP=1" <<<"$sql" >&2 || {
        echo "postgres.sh: cannot create the role datasync" >&2
        return 1
    }
    if [ "$(su postgres -c "psql -p $port -qAtc \"SELECT 1 FROM pg_database WHERE datname = 'datasync_test'\"")" != "1" ]; then
        su postgres -c "psql -p $port -qAt -v ON_ERROR_STOP=1 -c 'CREATE DATABASE datasync_test OWNER datasync'" >&2 || {
            echo "postgres.sh: cannot create the database datasync_test" >&2
            return 1
        }
    fi
    DATASYNC_TEST_POSTGRES="postgres://datasync:datasync@127.0.0.1:$port/datasync_test"
    export DATASYNC_TEST_POSTGRES
    echo "$DATASYNC_TEST_POSTGRES"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    _datasync_pg
    exit $?
fi
_datasync_pg
