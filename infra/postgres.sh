#!/usr/bin/env bash
# PostgreSQL (Debian's packages) for the local stack, on 127.0.0.1:$TAGFLEET_PG_PORT (default 15432).
#
#   infra/postgres.sh start|stop|restart|status|pause|resume
#
# A throwaway test cluster: role `tagfleet` (password `tagfleet`, CREATEDB, so tests can create
# a database each, and pg_signal_backend, so they can drop it WITH (FORCE)) owning database
# `tagfleet`; max_connections=200. Durability is traded for
# speed: fsync, synchronous_commit and full_page_writes are off. Never point production here.
# The server runs as the `postgres` user (we are root); its data directory is
# var/stack/pg/data, or /tmp/tagfleet-pg-<hash>/data when the postgres user cannot reach the
# checkout (var/stack/pg/datadir names the one in use). Log: <data dir>/../postgres.log.
SERVICE=postgres
PROC_MATCH=postgres
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="${TAGFLEET_PG_PORT:-15432}"
PG_USER=tagfleet
PG_PASSWORD=tagfleet
PG_DB=tagfleet
STATE="$STACK_DIR/pg"
START_TIMEOUT="${TAGFLEET_PG_START_TIMEOUT:-60}"
OS_USER=postgres

find_bindir() {
    local d
    # Newest Debian server package first; then whatever is on PATH (/usr/local/bin may link there).
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5 -V -r); do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
    done
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    return 1
}

as_pg() { runuser -u "$OS_USER" -- "$@"; }

# The data directory: in the checkout when the postgres user can reach it, else under /tmp.
data_dir() {
    if [[ -s "$STATE/datadir" ]]; then
        cat "$STATE/datadir"
        return 0
    fi
    mkdir -p "$STATE"
    local dir="$STATE/data"
    mkdir -p "$dir"
    chown "$OS_USER:" "$STATE" "$dir"
    chmod 700 "$dir"
    if ! as_pg test -w "$dir"; then
        rmdir "$dir"
        dir="/tmp/tagfleet-pg-$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1)/data"
        mkdir -p "$dir"
        chown -R "$OS_USER:" "$(dirname "$dir")"
        chmod 700 "$dir"
        log "postgres cannot reach $STATE; using $dir"
    fi
    echo "$dir" >"$STATE/datadir"
    echo "$dir"
}

PGDATA_DIR=""
pidfile() { echo "$PGDATA_DIR/postmaster.pid"; }
socket_dir() { echo "/tmp/tagfleet-pgsock-$PORT"; }

# postmaster.pid holds more than the pid; keep only its first line for the shared helpers.
pid_copy() {
    mkdir -p "$STATE"
    if [[ -r "$(pidfile)" ]]; then head -n1 "$(pidfile)" >"$STATE/postgres.pid"; else rm -f "$STATE/postgres.pid"; fi
    echo "$STATE/postgres.pid"
}

init_cluster() {
    [[ -f "$PGDATA_DIR/PG_VERSION" ]] && return 0
    log "initdb in $PGDATA_DIR"
    local pwfile
    pwfile="$(mktemp)"
    # A random superuser password: tests use the tagfleet role; admin work goes over the socket.
    python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$pwfile"
    chown "$OS_USER:" "$pwfile"
    as_pg "$BINDIR/initdb" -D "$PGDATA_DIR" -U postgres --pwfile="$pwfile" -E UTF8 \
        --locale=C.UTF-8 --auth-local=peer --auth-host=scram-sha-256 >"$PGDATA_DIR/../initdb.log" 2>&1 || {
        rm -f "$pwfile"
        cat "$PGDATA_DIR/../initdb.log" >&2
        die "initdb failed"
    }
    rm -f "$pwfile"
    cat >>"$PGDATA_DIR/postgresql.conf" <<EOF

# tagfleet local test cluster (infra/postgres.sh): loopback only, speed over durability.
listen_addresses = '127.0.0.1'
max_connections = 200
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
EOF
}

bootstrap_role() {
    local sock
    sock="$(socket_dir)"
    as_pg "$BINDIR/psql" -h "$sock" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END
\$\$;
-- DROP DATABASE ... WITH (FORCE) (test teardown) must also end an autovacuum worker, which runs
-- under no role; only superusers and pg_signal_backend members may. Idempotent (a NOTICE).
GRANT pg_signal_backend TO $PG_USER;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
SQL
}

ready() { as_pg "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

start() {
    BINDIR="$(find_bindir)" ||
        die "PostgreSQL server binaries not found: run 'make setup' (apt-get install -y postgresql)"
    id "$OS_USER" >/dev/null 2>&1 || die "no '$OS_USER' user: run 'make setup' (apt-get install -y postgresql)"
    PGDATA_DIR="$(data_dir)"
    if pid_alive "$(pid_copy)"; then
        wait_until "$START_TIMEOUT" "postgres on port $PORT" ready ||
            die "postgres (pid $(<"$STATE/postgres.pid")) is not ready; see $PGDATA_DIR/../postgres.log"
        log "already up (pid $(<"$STATE/postgres.pid"))"
        return 0
    fi
    if port_open "$PORT"; then
        log "port $PORT already answers (not started from this checkout); using it as is"
        return 0
    fi
    init_cluster
    local sock
    sock="$(socket_dir)"
    mkdir -p "$sock"
    chown "$OS_USER:" "$sock"
    log "starting PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT ($PGDATA_DIR)"
    # pg_ctl -w waits for the server to accept connections; setsid detaches it from our group.
    setsid runuser -u "$OS_USER" -- "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -w -t "$START_TIMEOUT" \
        -l "$PGDATA_DIR/../postgres.log" \
        -o "-p $PORT -k $sock" start >/dev/null </dev/null ||
        die "pg_ctl start failed; see $PGDATA_DIR/../postgres.log"
    wait_until "$START_TIMEOUT" "postgres on port $PORT" ready || die "postgres did not become ready"
    bootstrap_role || die "could not create role/database $PG_USER; see $PGDATA_DIR/../postgres.log"
    log "up (pid $(<"$(pid_copy)"))"
}

stop() {
    if [[ -s "$STATE/datadir" ]]; then PGDATA_DIR="$(<"$STATE/datadir")"; else PGDATA_DIR="$STATE/data"; fi
    if ! pid_alive "$(pid_copy)"; then
        refuse_foreign "$PORT" PostgreSQL
        return 0
    fi
    BINDIR="$(find_bindir)" || die "PostgreSQL binaries not found; cannot stop pid $(<"$STATE/postgres.pid")"
    log "stopping PostgreSQL (pid $(<"$STATE/postgres.pid"))"
    # Fast mode: disconnect clients and shut down cleanly; immediate if that hangs.
    as_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 30 stop >/dev/null ||
        as_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >/dev/null
    rm -f "$STATE/postgres.pid"
}

status_cmd() {
    if [[ -s "$STATE/datadir" ]]; then PGDATA_DIR="$(<"$STATE/datadir")"; else PGDATA_DIR="$STATE/data"; fi
    print_status postgres "$(pid_copy)" "$PORT"
}

# Pauses or resumes the postmaster and every backend, so open connections hang too.
signal_cmd() {
    [[ -s "$STATE/datadir" ]] || die "postgres was never started from this checkout"
    PGDATA_DIR="$(<"$STATE/datadir")"
    local pidfile pid
    pidfile="$(pid_copy)"
    pid_alive "$pidfile" || die "postgres is not running from this checkout"
    pid="$(<"$pidfile")"
    local -a children
    mapfile -t children < <(ps -o pid= --ppid "$pid" | tr -d ' ')
    kill "-$1" "$pid" "${children[@]}"
}

service_main "$@"
