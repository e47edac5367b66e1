# shellcheck shell=bash
# Shared helpers for the local-stack scripts in infra/. Sourced, never run.
#
# Every service keeps its state under var/stack/<service>/ in the checkout (gitignored):
# a pid file, its log and its data. A service counts as "up" when its pid is alive and its
# port accepts connections; a port that answers without a pid file of ours belongs to
# something else (another checkout's stack, say), which `up` accepts but `stop` never kills.

set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$INFRA_DIR/.." && pwd)"
# shellcheck disable=SC2034 # used by the scripts that source this file
STACK_DIR="${TAGFLEET_STACK_DIR:-$REPO_ROOT/var/stack}"
# shellcheck disable=SC2034
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/tagfleet"

log() { printf '[%s] %s\n' "${SERVICE:-stack}" "$*" >&2; }
die() {
    printf '[%s] error: %s\n' "${SERVICE:-stack}" "$*" >&2
    exit 1
}

# usage_from_header SCRIPT: the script's leading comment block, minus the shebang.
usage_from_header() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive PIDFILE: true when the pid file names a live process (zombies count as dead)
# whose command line contains $PROC_MATCH (set by each service script), so a pid left over
# from before a reboot and reused by another program does not count.
pid_alive() {
    local pid state args
    [[ -s "$1" ]] || return 1
    pid="$(<"$1")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    state="$(ps -o stat= -p "$pid" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z* ]] || return 1
    [[ -n "${PROC_MATCH:-}" ]] || return 0
    args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$args" == *"$PROC_MATCH"* ]]
}

# wait_until TIMEOUT_S DESCRIPTION CMD...: polls CMD every 0.2 s until it succeeds.
wait_until() {
    local timeout="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

# stop_pid PIDFILE NAME PORT [TIMEOUT_S]: SIGTERM, wait, then SIGKILL; removes the pid file.
stop_pid() {
    local pidfile="$1" name="$2" port="$3" timeout="${4:-30}" pid
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        refuse_foreign "$port" "$name"
        return 0
    fi
    pid="$(<"$pidfile")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until "$timeout" "$name to exit" bash -c "! kill -0 $pid 2>/dev/null"; then
        log "$name did not exit after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

# refuse_foreign PORT NAME: fails when PORT answers although we hold no live pid for it, so
# that a stop never reports success for a service some other checkout runs.
refuse_foreign() {
    if port_open "$1"; then
        die "$2 on port $1 was not started from this checkout ($REPO_ROOT); stop it where it was started"
    fi
}

# signal_pid PIDFILE SIGNAL NAME: pause (STOP) or resume (CONT) a service we started.
signal_pid() {
    local pidfile="$1" sig="$2" name="$3"
    pid_alive "$pidfile" || die "$name is not running from this checkout ($pidfile)"
    kill "-$sig" "$(<"$pidfile")"
}

# venv_python: the project's venv interpreter when present, else python3 on PATH.
venv_python() {
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        echo "$REPO_ROOT/.venv/bin/python"
    else
        command -v python3 || die "python3 not found; run 'make setup'"
    fi
}

# print_status NAME PIDFILE PORT: one line for `status`; returns 0 when up.
print_status() {
    local name="$1" pidfile="$2" port="$3"
    if pid_alive "$pidfile" && port_open "$port"; then
        echo "$name: up (pid $(<"$pidfile"), port $port)"
    elif pid_alive "$pidfile"; then
        echo "$name: starting or unhealthy (pid $(<"$pidfile"), port $port not answering)"
        return 1
    elif port_open "$port"; then
        echo "$name: port $port answers, but not a process started from this checkout"
    else
        echo "$name: down"
        return 1
    fi
}

# service_main ARGS...: the command dispatch every service script shares. The script defines
# start, stop, status_cmd and signal_cmd SIGNAL before calling it.
service_main() {
    case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) stop && start ;;
    status) status_cmd ;;
    pause) signal_cmd STOP ;;
    resume) signal_cmd CONT ;;
    -h | --help | help) usage_from_header "$0" ;;
    *) die "usage: $0 start|stop|restart|status|pause|resume" ;;
    esac
}
