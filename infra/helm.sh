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
# Like helm's Makefile: stamp the version and the Kubernetes version of its client-go, which
# `helm template` and `helm lint` assume when no --kube-version is given (else v1.20).
export GOFLAGS="-mod=mod -buildvcs=false"
"$GO" mod download "helm.sh/helm/$MAJOR@$VERSION" >&2
GOMOD="$("$GO" mod download -json "helm.sh/helm/$MAJOR@$VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
K8S_MINOR="$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$GOMOD")"
[[ -n "$K8S_MINOR" ]] || { echo "helm.sh: no k8s.io/client-go in $GOMOD" >&2; exit 1; }
LDFLAGS="-s -w -X helm.sh/helm/$MAJOR/internal/version.version=$VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
    LDFLAGS+=" -X helm.sh/helm/$MAJOR/$pkg.k8sVersionMajor=1 -X helm.sh/helm/$MAJOR/$pkg.k8sVersionMinor=$K8S_MINOR"
done
GOBIN="$WORK" CGO_ENABLED=0 "$GO" install -ldflags "$LDFLAGS" "helm.sh/helm/$MAJOR/cmd/helm@$VERSION" >&2
mv "$WORK/helm" "$TARGET"
echo "$TARGET"
