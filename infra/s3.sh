#!/usr/bin/env bash
# moto's S3 server for the local stack, on 127.0.0.1:$TAGFLEET_S3_PORT (default 15000).
#
#   infra/s3.sh start|stop|restart|status|pause|resume
#
# Runs from the project's .venv when present (moto[server] is a dev dependency), else from
# python3 on PATH. moto keeps buckets in memory: a stop or restart empties them, while
# pause/resume (SIGSTOP/SIGCONT) keeps them and makes clients time out in between.
# State: var/stack/s3/{moto.pid,moto.log}.
SERVICE=s3
PROC_MATCH=moto.server
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="${TAGFLEET_S3_PORT:-15000}"
STATE="$STACK_DIR/s3"
PIDFILE="$STATE/moto.pid"
START_TIMEOUT="${TAGFLEET_S3_START_TIMEOUT:-60}"

answers_http() {
    python3 - "$PORT" <<'PY' 2>/dev/null
import sys
import urllib.request

with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

start() {
    if pid_alive "$PIDFILE"; then
        wait_until "$START_TIMEOUT" "moto on port $PORT" answers_http ||
            die "moto (pid $(<"$PIDFILE")) does not answer on port $PORT; see $STATE/moto.log"
        log "already up (pid $(<"$PIDFILE"))"
        return 0
    fi
    if port_open "$PORT"; then
        log "port $PORT already answers (not started from this checkout); using it as is"
        return 0
    fi
    local python
    python="$(venv_python)"
    "$python" -c 'import moto.server, flask' 2>/dev/null ||
        die "moto's server is not installed for $python: run 'make setup' (moto[server] is a dev dependency)"
    mkdir -p "$STATE"
    log "starting moto S3 on 127.0.0.1:$PORT ($python)"
    rm -f "$PIDFILE"
    # shellcheck disable=SC2016 # expanded by the inner bash: it records its own pid, then execs
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
        "$python" -m moto.server -H 127.0.0.1 -p "$PORT" \
        </dev/null >>"$STATE/moto.log" 2>&1 &
    wait_until 5 "pid file" test -s "$PIDFILE" || die "moto did not start"
    wait_until "$START_TIMEOUT" "moto on port $PORT" answers_http ||
        die "moto did not answer on port $PORT within ${START_TIMEOUT}s; see $STATE/moto.log"
    log "up (pid $(<"$PIDFILE"))"
}

stop() { stop_pid "$PIDFILE" "moto server" "$PORT" 15; }

status_cmd() { print_status s3 "$PIDFILE" "$PORT"; }
signal_cmd() { signal_pid "$PIDFILE" "$1" "moto server"; }

service_main "$@"
