#!/usr/bin/env bash
# Prepares a machine for tests and the demo; safe to run again (does only what is missing).
#
#   infra/setup.sh
#
# 1. Debian packages the local stack needs, only when missing: postgresql,
#    openjdk-17-jre-headless (Kafka 4 needs Java 17+), maven (resolves Kafka's jars),
#    chromium and chromium-driver (the review page's browser test drives them with Selenium).
#    `apt-get update` runs once, before the first install.
# 2. .venv (python3 -m venv) when missing, then `pip install -c constraints.txt -e '.[dev,gpu-decode]'`
#    (the exact versions the image installs too) when pyproject.toml or constraints.txt
#    changed since the last install (stamp in .venv/.tagfleet-installed). pip's cache is reused.
# 3. VersityGW's binary (infra/versitygw.sh build: `go install` of a pinned version into
#    ~/.cache/tagfleet/bin, about 2 minutes on 2 cores the first time, then nothing). A failed
#    build is a warning, not an error: the gateway is optional in the stack for now, and its
#    tests report the failure.
# Environment: PYTHON (interpreter for the venv, default python3),
# TAGFLEET_SETUP_FORCE=1 (reinstall the project even when the stamp matches).
SERVICE=setup
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
-h | --help | help)
    usage_from_header "$0"
    exit 0
    ;;
"") ;;
*) die "usage: infra/setup.sh (no arguments)" ;;
esac

java_ok() {
    command -v java >/dev/null || return 1
    local v
    v="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
    [[ -n "$v" && "$v" -ge 17 ]]
}

pg_ok() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null
}

apt_packages() {
    local -a missing=()
    pg_ok || missing+=(postgresql)
    java_ok || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
    command -v flock >/dev/null || missing+=(util-linux)
    # the review page's browser test: Debian's Chromium and its driver (Selenium uses both)
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null ||
        die "missing ${missing[*]} and no apt-get here: install them with your package manager"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    log "installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        # Debian's package starts a cluster on 5432; the stack runs its own, so stop that one.
        if command -v pg_ctlcluster >/dev/null; then
            "${sudo[@]}" service postgresql stop >/dev/null 2>&1 || true
        fi
    fi
}

python_env() {
    local venv="$REPO_ROOT/.venv" py="${PYTHON:-python3}" stamp want
    if [[ ! -x "$venv/bin/python" ]]; then
        command -v "$py" >/dev/null || die "$py not found; set PYTHON to a Python 3.11+ interpreter"
        log "creating $venv with $("$py" --version)"
        "$py" -m venv "$venv"
    fi
    stamp="$venv/.tagfleet-installed"
    want="$(cat "$REPO_ROOT/pyproject.toml" "$REPO_ROOT/constraints.txt" | cksum)"
    if [[ "${TAGFLEET_SETUP_FORCE:-0}" != 1 && -f "$stamp" && "$(<"$stamp")" == "$want" ]]; then
        log "venv up to date (pyproject.toml and constraints.txt unchanged since the last install)"
        return 0
    fi
    # gpu-decode: nvImageCodec (29 MB, seconds), so its CPU parity tests run everywhere
    log "pip install -c constraints.txt -e '.[dev,gpu-decode]' into $venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    (cd "$REPO_ROOT" && "$venv/bin/python" -m pip install -q -c constraints.txt -e '.[dev,gpu-decode]' >&2)
    echo "$want" >"$stamp"
}

gateway_binary() {
    "$INFRA_DIR/versitygw.sh" build >/dev/null ||
        log "warning: could not build VersityGW (see above); 'infra/stack.sh up' will try again"
}

started=$SECONDS
apt_packages
python_env
gateway_binary
log "done in $((SECONDS - started))s"
