#!/usr/bin/env bash
# Ensures a helm binary built from the Go module proxy and prints its path.
#
#   infra/helm.sh            # builds once into ~/.cache/tagfleet/bin, then reuses it
#   "$(infra/helm.sh)" lint helm/tagfleet
#
# Version from TAGFLEET_HELM_VERSION (default below); the binary is named after it, so a
# version bump builds anew and an older cached one is left alone. Build output goes to
# stderr; stdout carries only the path. Needs `go` on PATH (or /usr/local/go/bin).
set -euo pipefail

VERSION="${TAGFLEET_HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/tagfleet"
BIN_DIR="$CACHE_ROOT/bin"
TARGET="$BIN_DIR/helm-$VERSION"

if [[ -x "$TARGET" ]]; then
    echo "$TARGET"
    exit 0
fi

GO="$(command -v go || true)"
[[ -n "$GO" ]] || GO=/usr/local/go/bin/go
[[ -x "$GO" ]] || { echo "helm.sh: go not found; install Go to build helm" >&2; exit 1; }

MAJOR="${VERSION%%.*}"
mkdir -p "$BIN_DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "helm.sh: building helm $VERSION from the Go module proxy (first time only)" >&2
# A private GOBIN so a half-built binary never lands under the cached name.
GOFLAGS="-mod=mod -buildvcs=false" GOBIN="$WORK" CGO_ENABLED=0 \
    "$GO" install -ldflags "-s -w -X helm.sh/helm/$MAJOR/internal/version.version=$VERSION" \
    "helm.sh/helm/$MAJOR/cmd/helm@$VERSION" >&2
mv "$WORK/helm" "$TARGET"
echo "$TARGET"
