#!/usr/bin/env bash
# Build the helm CLI from source through the Go module proxy into
# .cache/helm/<version>/helm (git-ignored) and print the binary's path.
#
# Why from source: this machine has Go and a module proxy but no release
# tarballs. Idempotent: an existing binary is reused; a lock serialises
# concurrent callers (several test workers, `make helm`). Cold build from an
# empty module cache: ~9 min on 2 cores (downloads ~200 modules); a rebuild
# with a warm module/build cache takes well under a minute.
#
# Environment: HELM_VERSION (default v3.22.0), HELM_CACHE (default
# <repo>/.cache/helm), GOPROXY/GOFLAGS as configured for go.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
HELM_CACHE="${HELM_CACHE:-$REPO_ROOT/.cache/helm}"
OUT_DIR="$HELM_CACHE/$HELM_VERSION"
HELM_BIN="$OUT_DIR/helm"

log() { printf '[helm-build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -x "$HELM_BIN" ]]; then
  echo "$HELM_BIN"
  exit 0
fi

command -v go >/dev/null || die "go is not on PATH (needed to build helm $HELM_VERSION)"
mkdir -p "$OUT_DIR"
exec 9>"$OUT_DIR/.build.lock"
flock -w 1200 9 || die "timed out waiting for another build ($OUT_DIR/.build.lock)"
# Another caller may have finished the build while we waited for the lock.
if [[ -x "$HELM_BIN" ]]; then
  echo "$HELM_BIN"
  exit 0
fi

case "$HELM_VERSION" in
  v3.*) MODULE="helm.sh/helm/v3" ;;
  v4.*) MODULE="helm.sh/helm/v4" ;;
  *) die "unsupported HELM_VERSION $HELM_VERSION (expected v3.x or v4.x)" ;;
esac

# The same ldflags as helm's own Makefile: the version string, and the
# Kubernetes version that `helm template`/`lint` assume (.Capabilities.KubeVersion),
# which the Makefile derives from the client-go module (v0.N -> 1.N).
TMP_BUILD="$(mktemp -d)"
trap 'rm -rf "$TMP_BUILD"' EXIT
cd "$TMP_BUILD"
log "resolving $MODULE@$HELM_VERSION through GOPROXY=$(go env GOPROXY)"
GOFLAGS="${GOFLAGS:-} -mod=mod" go mod download -json "$MODULE@$HELM_VERSION" >"$TMP_BUILD/mod.json" \
  || die "go mod download $MODULE@$HELM_VERSION failed (is the module proxy reachable?)"
MOD_DIR="$(sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p' "$TMP_BUILD/mod.json")"
CLIENT_GO="$(sed -n 's/^\s*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$MOD_DIR/go.mod" | head -n1)"
[[ -n "$CLIENT_GO" ]] || die "cannot read the k8s.io/client-go version from $MOD_DIR/go.mod"
LDFLAGS="-w -s -X $MODULE/internal/version.version=$HELM_VERSION"
LDFLAGS+=" -X $MODULE/pkg/lint/rules.k8sVersionMajor=1 -X $MODULE/pkg/lint/rules.k8sVersionMinor=$CLIENT_GO"
LDFLAGS+=" -X $MODULE/pkg/chartutil.k8sVersionMajor=1 -X $MODULE/pkg/chartutil.k8sVersionMinor=$CLIENT_GO"

log "building $MODULE/cmd/helm@$HELM_VERSION (Kubernetes 1.$CLIENT_GO) into $OUT_DIR"
start=$(date +%s)
GOBIN="$TMP_BUILD/bin" CGO_ENABLED=0 go install -ldflags "$LDFLAGS" "$MODULE/cmd/helm@$HELM_VERSION" \
  || die "go install $MODULE/cmd/helm@$HELM_VERSION failed"
"$TMP_BUILD/bin/helm" version --short >/dev/null || die "the built helm does not run"
mv "$TMP_BUILD/bin/helm" "$HELM_BIN.tmp"
mv "$HELM_BIN.tmp" "$HELM_BIN"
log "built $("$HELM_BIN" version --short) in $(($(date +%s) - start)) s"
echo "$HELM_BIN"
