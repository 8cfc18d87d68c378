#!/usr/bin/env bash
# Build Jaeger (v2, the OpenTelemetry-Collector-based all-in-one binary
# cmd/jaeger) from source through the Go module proxy into
# .cache/jaeger/<version>/jaeger (git-ignored) and print the binary's path.
#
# Why from source: this machine has Go and a module proxy but no release
# tarballs or images (the same reason as deploy/helm/build.sh). The module's
# go.mod has a replace directive, so `go install pkg@version` refuses it: the
# module is downloaded, copied out of the read-only module cache and built in
# place with `go build`. Idempotent: an existing binary is reused; a lock
# serialises concurrent callers (test workers, `make jaeger-build`). The UI is
# the placeholder page (the real one needs npm assets); the query HTTP API,
# which the tests and scripts use, is complete. Cold build from an empty module
# cache: ~20 min on 2 busy cores (1174 s measured, ~300 modules); a rebuild with a
# warm module/build cache (another checkout on the same machine) takes ~15 s.
#
# Environment: JAEGER_VERSION (Go module version, default v1.75.0 = Jaeger
# v2.12.0), JAEGER_CACHE (default <repo>/.cache/jaeger), GOPROXY/GOFLAGS as
# configured for go.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
JAEGER_VERSION="${JAEGER_VERSION:-v1.75.0}"
JAEGER_CACHE="${JAEGER_CACHE:-$REPO_ROOT/.cache/jaeger}"
OUT_DIR="$JAEGER_CACHE/$JAEGER_VERSION"
JAEGER_BIN="$OUT_DIR/jaeger"
MODULE="github.com/jaegertracing/jaeger"

log() { printf '[jaeger-build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -x "$JAEGER_BIN" ]]; then
  echo "$JAEGER_BIN"
  exit 0
fi

# go may be installed outside PATH (/usr/local/go is the toolchain's default prefix).
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null || die "go is not on PATH (needed to build jaeger $JAEGER_VERSION)"
mkdir -p "$OUT_DIR"
exec 9>"$OUT_DIR/.build.lock"
flock -w 1800 9 || die "timed out waiting for another build ($OUT_DIR/.build.lock)"
# Another caller may have finished the build while we waited for the lock.
if [[ -x "$JAEGER_BIN" ]]; then
  echo "$JAEGER_BIN"
  exit 0
fi

TMP_BUILD="$(mktemp -d)"
trap 'chmod -R u+w "$TMP_BUILD" 2>/dev/null; rm -rf "$TMP_BUILD"' EXIT
cd "$TMP_BUILD"
log "resolving $MODULE@$JAEGER_VERSION through GOPROXY=$(go env GOPROXY)"
GOFLAGS="${GOFLAGS:-} -mod=mod" go mod download -json "$MODULE@$JAEGER_VERSION" >"$TMP_BUILD/mod.json" \
  || die "go mod download $MODULE@$JAEGER_VERSION failed (is the module proxy reachable?)"
MOD_DIR="$(sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p' "$TMP_BUILD/mod.json")"
[[ -f "$MOD_DIR/go.mod" ]] || die "module directory not found after download ($MOD_DIR)"
cp -r "$MOD_DIR" "$TMP_BUILD/src"
chmod -R u+w "$TMP_BUILD/src"

# The version fields Jaeger's own Makefile sets (scripts/makefiles/BuildInfo.mk);
# `jaeger version` and the /api/version endpoint report them.
LDFLAGS="-w -s -X $MODULE/internal/version.latestVersion=$JAEGER_VERSION"
LDFLAGS+=" -X $MODULE/internal/version.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"

log "building $MODULE/cmd/jaeger@$JAEGER_VERSION into $OUT_DIR"
start=$(date +%s)
(cd "$TMP_BUILD/src" && CGO_ENABLED=0 go build -trimpath -ldflags "$LDFLAGS" -o "$TMP_BUILD/bin/jaeger" ./cmd/jaeger) \
  || die "go build ./cmd/jaeger of $MODULE@$JAEGER_VERSION failed"
"$TMP_BUILD/bin/jaeger" version >/dev/null 2>&1 || die "the built jaeger does not run"
mv "$TMP_BUILD/bin/jaeger" "$JAEGER_BIN.tmp"
mv "$JAEGER_BIN.tmp" "$JAEGER_BIN"
log "built jaeger $JAEGER_VERSION in $(($(date +%s) - start)) s"
echo "$JAEGER_BIN"
