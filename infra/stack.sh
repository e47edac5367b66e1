#!/usr/bin/env bash
# The local stack of real services that tests and the demo use: Apache Kafka 4.x (KRaft),
# moto's S3 server, PostgreSQL and VersityGW (an S3 gateway that publishes its own bucket
# notifications to Kafka), each a plain process with its state under var/stack/.
#
# Usage: infra/stack.sh COMMAND [SERVICE]
#   up                 start every service not already up (idempotent); the gateway is
#                      optional for now: when it cannot be built or started, `up` warns and
#                      still succeeds (its own tests then fail with the reason)
#   down               stop every service started from this checkout (the gateway first)
#   status             one line per service; exit 1 when any is down
#   env                print the export lines tests and the demo read: eval "$(infra/stack.sh env)"
#   start SERVICE      start one service: kafka | s3 | postgres | versitygw
#   stop SERVICE       stop one service (the fault suite stops and restarts single services)
#   restart SERVICE    stop, then start one service
#   pause SERVICE      SIGSTOP the service: its port stays open but nothing answers
#   resume SERVICE     SIGCONT a paused service
#
# Ports: TAGFLEET_KAFKA_PORT (19092), TAGFLEET_KAFKA_SASL_PORT (19094),
# TAGFLEET_KAFKA_SSL_PORT (19095; mutual TLS, certificates in var/stack/kafka/tls/),
# TAGFLEET_KAFKA_CONTROLLER_PORT (19093), TAGFLEET_S3_PORT (15000), TAGFLEET_PG_PORT (15432),
# TAGFLEET_GW_PORT (17070; events to topic TAGFLEET_GW_EVENTS_TOPIC, default gw-events).
# TAGFLEET_STACK_DIR (default var/stack) holds every service's state; with other ports it
# lets a second stack run beside the first.
# First `up` on a machine resolves Kafka's jars with Maven and builds VersityGW with Go
# (~/.cache/tagfleet); run `make setup` first on a fresh machine (Java, Maven, PostgreSQL,
# the venv, the gateway's binary).
SERVICE=stack
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Kafka before the gateway: it publishes to Kafka from its first second.
SERVICES=(kafka s3 postgres versitygw)
# Services whose failure to start is a warning in `up`, not an error (see the usage above).
OPTIONAL_SERVICES=" versitygw "

usage() { usage_from_header "$0"; }

service_script() {
    case "$1" in
    kafka | s3 | postgres | versitygw) echo "$INFRA_DIR/$1.sh" ;;
    pg | postgresql) echo "$INFRA_DIR/postgres.sh" ;;
    gw | gateway) echo "$INFRA_DIR/versitygw.sh" ;;
    *) die "unknown service '$1' (expected one of: ${SERVICES[*]})" ;;
    esac
}

env_lines() {
    cat <<EOF
export TAGFLEET_BOOTSTRAP_SERVERS=127.0.0.1:${TAGFLEET_KAFKA_PORT:-19092}
export TAGFLEET_KAFKA_SASL_BOOTSTRAP=127.0.0.1:${TAGFLEET_KAFKA_SASL_PORT:-19094}
export TAGFLEET_KAFKA_SSL_BOOTSTRAP=127.0.0.1:${TAGFLEET_KAFKA_SSL_PORT:-19095}
export TAGFLEET_TEST_KAFKA_SSL_CAFILE=$STACK_DIR/kafka/tls/ca.pem
export TAGFLEET_TEST_KAFKA_SSL_CERTFILE=$STACK_DIR/kafka/tls/client-cert.pem
export TAGFLEET_TEST_KAFKA_SSL_KEYFILE=$STACK_DIR/kafka/tls/client-key.pem
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:${TAGFLEET_S3_PORT:-15000}
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1
export TAGFLEET_TEST_PG_URL=postgresql+psycopg://tagfleet:tagfleet@127.0.0.1:${TAGFLEET_PG_PORT:-15432}/tagfleet
export TAGFLEET_GW_ENDPOINT=http://127.0.0.1:${TAGFLEET_GW_PORT:-17070}
export TAGFLEET_GW_ACCESS_KEY=${TAGFLEET_GW_ACCESS_KEY:-tagfleet-gw}
export TAGFLEET_GW_SECRET_KEY=${TAGFLEET_GW_SECRET_KEY:-tagfleet-gw-secret}
export TAGFLEET_GW_EVENTS_TOPIC=${TAGFLEET_GW_EVENTS_TOPIC:-gw-events}
EOF
}

up() {
    local started=$SECONDS s
    mkdir -p "$STACK_DIR"
    # One `up` at a time per checkout: pytest workers and make may race to start the stack.
    exec 9>"$STACK_DIR/.lock"
    flock -w 600 9 || die "another 'infra/stack.sh up' holds $STACK_DIR/.lock for over 10 minutes"
    for s in "${SERVICES[@]}"; do
        # 9>&-: the services must not inherit the lock, or they would hold it while they run.
        if [[ "$OPTIONAL_SERVICES" == *" $s "* ]]; then
            "$(service_script "$s")" start 9>&- ||
                log "warning: $s did not start (see above); the rest of the stack is up"
        else
            "$(service_script "$s")" start 9>&-
        fi
    done
    flock -u 9
    log "stack up in $((SECONDS - started))s"
}

down() {
    local i rc=0
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        "$(service_script "${SERVICES[i]}")" stop || rc=1
    done
    return "$rc"
}

status() {
    local s rc=0
    for s in "${SERVICES[@]}"; do
        "$(service_script "$s")" status || rc=1
    done
    return "$rc"
}

one() {
    local cmd="$1" svc="${2:-}"
    [[ -n "$svc" ]] || die "'$cmd' needs a service: infra/stack.sh $cmd kafka|s3|postgres|versitygw"
    local script
    script="$(service_script "$svc")" || exit 2
    "$script" "$cmd"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
env) env_lines ;;
start | stop | restart | pause | resume) one "$@" ;;
-h | --help | help) usage ;;
"")
    usage >&2
    exit 2
    ;;
*)
    printf 'infra/stack.sh: unknown command %q\n\n' "$1" >&2
    usage >&2
    exit 2
    ;;
esac
