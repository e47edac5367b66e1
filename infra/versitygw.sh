#!/usr/bin/env bash
# VersityGW (an S3 gateway, Apache-2.0) for the local stack: the posix backend on
# 127.0.0.1:$TAGFLEET_GW_PORT (default 17070), publishing its own bucket notifications
# (s3:ObjectCreated:*, s3:ObjectRemoved:*, ...) to the stack's Kafka.
#
#   infra/versitygw.sh start|stop|restart|status|pause|resume
#   infra/versitygw.sh build     # builds the binary once if missing, prints its path
#
# Built once with `go install github.com/versity/versitygw/cmd/versitygw@$TAGFLEET_GW_VERSION`
# (default v1.8.0) from the Go module proxy into ~/.cache/tagfleet/bin/versitygw-<version>;
# later starts reuse it (`infra/setup.sh` builds it too). Needs `go` on PATH or /usr/local/go.
#
# Run as:
#   versitygw --port 127.0.0.1:$PORT --access $ACCESS --secret $SECRET --region us-east-1
#     --iam-dir var/stack/versitygw/iam --health /_tagfleet_health
#     --event-kafka-url 127.0.0.1:$TAGFLEET_KAFKA_PORT --event-kafka-topic $TOPIC
#     posix var/stack/versitygw/data
# Every bucket under data/ is a directory, every object a file (metadata in user xattrs, so
# the state directory must be on a filesystem with xattrs: ext4, xfs, btrfs).
# The events topic (TAGFLEET_GW_EVENTS_TOPIC, default gw-events) is created first with Kafka's
# TopicCommand (TAGFLEET_GW_EVENTS_PARTITIONS partitions, default 4): the gateway writes an
# s3:TestEvent to it on start-up and refuses to start when that write fails, so Kafka must be
# up first (`infra/stack.sh up` starts it before the gateway).
# Credentials: TAGFLEET_GW_ACCESS_KEY (tagfleet-gw), TAGFLEET_GW_SECRET_KEY (tagfleet-gw-secret).
# State: var/stack/versitygw/{data/,iam/,versitygw.pid,versitygw.log}; `stop` keeps data/.
SERVICE=versitygw
PROC_MATCH=versitygw
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION="${TAGFLEET_GW_VERSION:-v1.8.0}"
PORT="${TAGFLEET_GW_PORT:-17070}"
KAFKA_PORT="${TAGFLEET_KAFKA_PORT:-19092}"
TOPIC="${TAGFLEET_GW_EVENTS_TOPIC:-gw-events}"
PARTITIONS="${TAGFLEET_GW_EVENTS_PARTITIONS:-4}"
ACCESS="${TAGFLEET_GW_ACCESS_KEY:-tagfleet-gw}"
SECRET="${TAGFLEET_GW_SECRET_KEY:-tagfleet-gw-secret}"
START_TIMEOUT="${TAGFLEET_GW_START_TIMEOUT:-60}"
HEALTH_PATH=/_tagfleet_health # '_' is not allowed in bucket names: no clash with a bucket

BIN_DIR="$CACHE_ROOT/bin"
BIN="$BIN_DIR/versitygw-$VERSION"
STATE="$STACK_DIR/versitygw"
PIDFILE="$STATE/versitygw.pid"
LOGFILE="$STATE/versitygw.log"

# ensure_binary: builds the pinned version once; a half-built binary never lands under the
# cached name (private GOBIN, then mv).
ensure_binary() {
    [[ -x "$BIN" ]] && return 0
    local go work started=$SECONDS
    go="$(command -v go || true)"
    [[ -n "$go" ]] || go=/usr/local/go/bin/go
    [[ -x "$go" ]] || die "go not found (PATH or /usr/local/go/bin): install Go to build versitygw"
    mkdir -p "$BIN_DIR"
    work="$(mktemp -d)"
    log "building versitygw $VERSION from the Go module proxy into $BIN (first time only, ~2 min on 2 cores)"
    if ! GOFLAGS="-mod=mod -buildvcs=false" GOBIN="$work" CGO_ENABLED=0 "$go" install \
        -ldflags "-s -w -X=main.Version=$VERSION -X=main.Build=go-install -X=main.BuildTime=none" \
        "github.com/versity/versitygw/cmd/versitygw@$VERSION" >&2; then
        rm -rf "$work"
        die "go install github.com/versity/versitygw/cmd/versitygw@$VERSION failed (see output above)"
    fi
    mv "$work/versitygw" "$BIN"
    rm -rf "$work"
    log "built $BIN in $((SECONDS - started))s"
}

# ensure_topic: the events topic must exist before the gateway starts (its start-up TestEvent
# would otherwise be written to an auto-created topic, or fail).
ensure_topic() {
    local libs
    libs="$("$INFRA_DIR/kafka.sh" jars)" || die "could not resolve Kafka's jars for TopicCommand"
    java -Dlog4j2.configurationFile="$INFRA_DIR/kafka/log4j2-tools.xml" -cp "$libs/*" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
        --create --if-not-exists --topic "$TOPIC" --partitions "$PARTITIONS" \
        --replication-factor 1 >"$STATE/topic.log" 2>&1 || {
        cat "$STATE/topic.log" >&2
        die "could not create the events topic '$TOPIC' on 127.0.0.1:$KAFKA_PORT"
    }
}

healthy() {
    python3 - "$PORT" "$HEALTH_PATH" <<'PY' 2>/dev/null
import sys
import urllib.request

with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

start() {
    mkdir -p "$STATE"
    # One start at a time (pytest workers may race); the gateway must not inherit the lock.
    exec 8>"$STATE/.start.lock"
    flock -w 300 8 || die "another start holds $STATE/.start.lock"
    if pid_alive "$PIDFILE"; then
        wait_until "$START_TIMEOUT" "versitygw on port $PORT" healthy ||
            die "versitygw (pid $(<"$PIDFILE")) does not answer on port $PORT; see $LOGFILE"
        log "already up (pid $(<"$PIDFILE"))"
        return 0
    fi
    if port_open "$PORT"; then
        log "port $PORT already answers (not started from this checkout); using it as is"
        return 0
    fi
    ensure_binary
    port_open "$KAFKA_PORT" ||
        die "Kafka does not answer on 127.0.0.1:$KAFKA_PORT: start it first (infra/stack.sh start kafka)"
    ensure_topic
    mkdir -p "$STATE/data" "$STATE/iam"
    log "starting versitygw $VERSION on 127.0.0.1:$PORT (posix $STATE/data, events to topic '$TOPIC' on 127.0.0.1:$KAFKA_PORT)"
    rm -f "$PIDFILE"
    # shellcheck disable=SC2016 # expanded by the inner bash: it records its own pid, then execs
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
        "$BIN" --port "127.0.0.1:$PORT" --access "$ACCESS" --secret "$SECRET" \
        --region us-east-1 --iam-dir "$STATE/iam" --health "$HEALTH_PATH" \
        --event-kafka-url "127.0.0.1:$KAFKA_PORT" --event-kafka-topic "$TOPIC" \
        posix "$STATE/data" \
        </dev/null >>"$LOGFILE" 2>&1 8>&- &
    wait_until 5 "pid file" test -s "$PIDFILE" || die "versitygw did not start"
    if ! wait_until "$START_TIMEOUT" "versitygw on port $PORT" bash -c "
            source '$INFRA_DIR/lib.sh'
            PROC_MATCH=$PROC_MATCH
            pid_alive '$PIDFILE' || exit 0
            port_open '$PORT'"; then
        die "versitygw did not open port $PORT within ${START_TIMEOUT}s; see $LOGFILE"
    fi
    pid_alive "$PIDFILE" || {
        tail -n 20 "$LOGFILE" >&2 || true
        die "versitygw exited during start; see $LOGFILE"
    }
    wait_until "$START_TIMEOUT" "versitygw health check" healthy ||
        die "versitygw does not answer $HEALTH_PATH on port $PORT; see $LOGFILE"
    log "up (pid $(<"$PIDFILE"))"
}

stop() { stop_pid "$PIDFILE" "versitygw" "$PORT" 15; }

status_cmd() { print_status versitygw "$PIDFILE" "$PORT"; }
signal_cmd() { signal_pid "$PIDFILE" "$1" "versitygw"; }

if [[ "${1:-}" == build ]]; then
    ensure_binary && echo "$BIN"
    exit 0
fi
service_main "$@"
