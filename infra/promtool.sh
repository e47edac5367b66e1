#!/usr/bin/env bash
# Ensures `promtool` (and the `prometheus` server binary beside it) from Debian's
# `prometheus` package and prints promtool's path.
#
#   "$(infra/promtool.sh)" check rules infra/prometheus/rules/tagfleet.rules.yml
#
# Installs only when missing (apt-get update + install, as root or through sudo).
# The package's maintainer scripts would start a prometheus service: while installing, a
# temporary /usr/sbin/policy-rc.d (exit 101) forbids service starts unless one is already
# there, and any prometheus daemon that still came up (no pid of ours) is stopped after.
set -euo pipefail

found() { command -v promtool 2>/dev/null || { [[ -x /usr/bin/promtool ]] && echo /usr/bin/promtool; }; }

if path="$(found)" && [[ -n "$path" ]] && command -v prometheus >/dev/null 2>&1; then
    echo "$path"
    exit 0
fi

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || { echo "promtool.sh: need root or sudo to apt-get install prometheus" >&2; exit 1; }
    SUDO=(sudo)
fi

POLICY=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\n# temporary, from tagfleet infra/promtool.sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    made_policy=1
fi
cleanup() { if ((made_policy)); then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

echo "promtool.sh: installing Debian's prometheus package (promtool)" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >&2
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >&2

# Belt and braces: a service manager that ignored policy-rc.d may have started the daemon.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
for pid in $(pgrep -x -u prometheus prometheus 2>/dev/null || true); do
    "${SUDO[@]}" kill -TERM "$pid" 2>/dev/null || true
done

path="$(found)" || { echo "promtool.sh: promtool still missing after install" >&2; exit 1; }
echo "$path"
