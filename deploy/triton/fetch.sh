#!/usr/bin/env bash
# Download the nvidia-pytriton wheel and assemble a runnable tritonserver with
# the python backend for the project's interpreter under .cache/triton/.
#
# Why the wheel and not `pip install nvidia-pytriton`: PyTriton pins numpy<2,
# which conflicts with the ML stack. We only need the tritonserver binary, its
# bundled libraries and the python backend, so the wheel is unpacked, never
# installed. Idempotent: a marker file records a completed assembly.
set -euo pipefail
# shellcheck source=deploy/triton/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

triton_require_python
PY_VER="$(triton_python_version)"
# Serialise concurrent runs (a test and `make triton-up` at the same time).
mkdir -p "$TRITON_CACHE"
exec 9>"$TRITON_CACHE/.fetch.lock"
flock -w 600 9 || triton_die "timed out waiting for another fetch.sh ($TRITON_CACHE/.fetch.lock)"
MARKER="$TRITON_CACHE/.fetched-pytriton-$PYTRITON_VERSION-py$PY_VER"

# Overlay environment for the stub (see TRITON_STUB_NUMPY in common.sh).
# Rebuilt when the numpy pin or the underlying environment changes.
build_stub_env() {
  [[ -n "$TRITON_STUB_NUMPY" ]] || return 0
  local main_site want
  main_site="$("$TRITON_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  want="numpy=$TRITON_STUB_NUMPY site=$main_site"
  if [[ -f "$TRITON_STUB_ENV/.ready" && "$(cat "$TRITON_STUB_ENV/.ready")" == "$want" ]]; then
    return 0
  fi
  triton_log "building stub environment (numpy==$TRITON_STUB_NUMPY over $main_site)"
  rm -rf "$TRITON_STUB_ENV"
  "$TRITON_PYTHON" -m venv --without-pip "$TRITON_STUB_ENV"
  local stub_site
  stub_site="$("$TRITON_STUB_ENV/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$TRITON_PYTHON" -m pip install --quiet --no-deps --only-binary=:all: --target "$stub_site" "numpy==$TRITON_STUB_NUMPY" \
    || triton_die "pip install numpy==$TRITON_STUB_NUMPY into $stub_site failed"
  # addsitedir (not a bare path) so the main environment's own .pth files
  # (editable installs) are processed too; it comes after the local numpy.
  printf 'import site; site.addsitedir(%s)\n' "'$main_site'" >"$stub_site/zz_textpulse_main_env.pth"
  "$TRITON_STUB_ENV/bin/python3" -c "import numpy, sys; assert numpy.__version__ == sys.argv[1], numpy.__version__" "$TRITON_STUB_NUMPY" \
    || triton_die "stub environment does not import numpy $TRITON_STUB_NUMPY"
  printf '%s' "$want" >"$TRITON_STUB_ENV/.ready"
}

if [[ -f "$MARKER" && -x "$TRITON_BIN" && -x "$TRITON_BACKENDS/python/triton_python_backend_stub" ]]; then
  build_stub_env
  triton_log "already assembled ($MARKER)"
  exit 0
fi

case "$(uname -m)" in
  x86_64) ARCH=x86_64 SHA="$PYTRITON_SHA256_X86_64" ;;
  aarch64) ARCH=aarch64 SHA="$PYTRITON_SHA256_AARCH64" ;;
  *) triton_die "unsupported machine $(uname -m): nvidia-pytriton ships x86_64 and aarch64 wheels only" ;;
esac

mkdir -p "$TRITON_CACHE/wheel"
WHEEL="$TRITON_CACHE/wheel/nvidia_pytriton-$PYTRITON_VERSION-py3-none-manylinux_2_35_$ARCH.whl"
if [[ ! -f "$WHEEL" ]]; then
  triton_log "downloading nvidia-pytriton==$PYTRITON_VERSION ($ARCH)"
  REQ="$(mktemp)"
  trap 'rm -f "$REQ"' EXIT
  printf 'nvidia-pytriton==%s --hash=sha256:%s\n' "$PYTRITON_VERSION" "$SHA" >"$REQ"
  "$TRITON_PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    --dest "$TRITON_CACHE/wheel" -r "$REQ" \
    || triton_die "pip download of nvidia-pytriton==$PYTRITON_VERSION failed (is PyPI reachable?)"
fi
[[ -f "$WHEEL" ]] || triton_die "expected wheel not found: $WHEEL"
if ! echo "$SHA  $WHEEL" | sha256sum --check --quiet - >/dev/null 2>&1; then
  rm -f "$WHEEL"
  triton_die "sha256 mismatch for $(basename "$WHEEL") (removed; run again to re-download)"
fi

triton_log "unpacking $(basename "$WHEEL")"
rm -rf "$TRITON_DIST.tmp"
mkdir -p "$TRITON_DIST.tmp"
"$TRITON_PYTHON" -m zipfile -e "$WHEEL" "$TRITON_DIST.tmp"
# zipfile does not keep the executable bit.
chmod +x "$TRITON_DIST.tmp/pytriton/tritonserver/bin/tritonserver" \
  "$TRITON_DIST.tmp"/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub
rm -rf "$TRITON_DIST"
mv "$TRITON_DIST.tmp" "$TRITON_DIST"

SRC_BACKEND="$TRITON_DIST/pytriton/tritonserver/backends/python"
STUB="$TRITON_DIST/pytriton/tritonserver/python_backend_stubs/$PY_VER/triton_python_backend_stub"
if [[ ! -f "$STUB" ]]; then
  have=("$TRITON_DIST"/pytriton/tritonserver/python_backend_stubs/*)
  triton_die "the wheel has no python backend stub for Python $PY_VER (has: ${have[*]##*/})"
fi
triton_log "assembling backends/python for Python $PY_VER"
rm -rf "$TRITON_BACKENDS.tmp"
mkdir -p "$TRITON_BACKENDS.tmp/python"
cp "$SRC_BACKEND/libtriton_python.so" "$SRC_BACKEND/triton_python_backend_utils.py" "$TRITON_BACKENDS.tmp/python/"
install -m 0755 "$STUB" "$TRITON_BACKENDS.tmp/python/triton_python_backend_stub"
rm -rf "$TRITON_BACKENDS"
mv "$TRITON_BACKENDS.tmp" "$TRITON_BACKENDS"

build_stub_env

# Fail now, not at model load, if a shared library cannot be resolved.
triton_export_runtime_env
for f in "$TRITON_BIN" "$TRITON_BACKENDS/python/libtriton_python.so" "$TRITON_BACKENDS/python/triton_python_backend_stub"; do
  missing="$(ldd "$f" 2>/dev/null | grep 'not found' || true)"
  [[ -z "$missing" ]] || triton_die "unresolved libraries for $f:"$'\n'"$missing"
done
# The binary must run here (glibc >= 2.35 for the manylinux_2_35 build);
# --help prints the usage and exits 1, so look at the output instead.
help_text="$("$TRITON_BIN" --help 2>&1 || true)"
[[ "$help_text" == *--model-repository* ]] \
  || triton_die "$TRITON_BIN does not run on this machine (needs glibc >= 2.35): ${help_text:0:300}"
rm -f "$TRITON_CACHE"/.fetched-pytriton-*
printf 'pytriton=%s\npython=%s\nwheel_sha256=%s\n' "$PYTRITON_VERSION" "$PY_VER" "$SHA" >"$MARKER"
triton_log "ready: $TRITON_BIN (backends: $TRITON_BACKENDS)"
