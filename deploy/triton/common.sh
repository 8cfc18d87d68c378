# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Shared settings for the local Triton scripts (sourced, not executed).
#
# Everything is overridable by environment so that tests can run a second,
# isolated server (other ports, other run dir) next to a developer's one.

TRITON_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Pinned PyTriton wheel: we only use the tritonserver binary, its bundled
# libraries and the python backend it ships (Triton server 2.51.0, i.e. the
# 24.10 container release). Hashes are the PyPI sha256 of both Linux wheels.
PYTRITON_VERSION="0.7.0"
PYTRITON_SHA256_X86_64="21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df"
PYTRITON_SHA256_AARCH64="f99e07ee56fe065337453956afba17d2673e02ec6a632c3de26ce6e7b32a0898"

TRITON_CACHE="${TRITON_CACHE:-$TRITON_REPO_ROOT/.cache/triton}"
TRITON_DIST="$TRITON_CACHE/dist"
TRITON_BIN="$TRITON_DIST/pytriton/tritonserver/bin/tritonserver"
TRITON_LIBS="$TRITON_DIST/nvidia_pytriton.libs"
TRITON_BACKENDS="$TRITON_CACHE/backends"

# The interpreter whose environment the python backend models run in. The stub
# embeds libpython of this exact minor version and finds the environment's
# site-packages through `python3` on PATH (it ignores PYTHONPATH).
TRITON_PYTHON="${TRITON_PYTHON:-$TRITON_REPO_ROOT/.venv/bin/python}"

# The python backend stub of Triton 2.51 is built with a pybind11 that predates
# the NumPy 2 ABI: with numpy 2 in the environment, InputTensor.as_numpy()
# returns wrong data and pb_utils.Tensor(name, ndarray) outputs arrive empty.
# So the stub runs in a thin overlay environment (.cache/triton/stub-env) that
# puts this numpy 1.x first and then adds TRITON_PYTHON's site-packages (torch,
# transformers, textpulse). Set TRITON_STUB_NUMPY= (empty) to run the stub
# directly in TRITON_PYTHON's environment (then models must use DLPack only).
TRITON_STUB_NUMPY="${TRITON_STUB_NUMPY-1.26.4}"
TRITON_STUB_ENV="$TRITON_CACHE/stub-env"

TRITON_HOST="${TRITON_HOST:-127.0.0.1}"
TRITON_HTTP_PORT="${TRITON_HTTP_PORT:-8000}"
TRITON_GRPC_PORT="${TRITON_GRPC_PORT:-8001}"
TRITON_METRICS_PORT="${TRITON_METRICS_PORT:-8002}"
TRITON_MODEL_REPO="${TRITON_MODEL_REPO:-$TRITON_REPO_ROOT/.cache/model-repo}"
# Comma-separated model names to load; empty = every directory in the repo.
TRITON_MODELS="${TRITON_MODELS:-}"
TRITON_RUN_DIR="${TRITON_RUN_DIR:-$TRITON_REPO_ROOT/.run/triton}"
TRITON_PID_FILE="$TRITON_RUN_DIR/tritonserver.pid"
TRITON_LOG_FILE="$TRITON_RUN_DIR/tritonserver.log"
TRITON_START_TIMEOUT="${TRITON_START_TIMEOUT:-180}"
TRITON_STOP_TIMEOUT="${TRITON_STOP_TIMEOUT:-30}"
TRITON_LOG_VERBOSE="${TRITON_LOG_VERBOSE:-0}"
# Config auto-completion makes the python backend start one extra stub per
# model just to call auto_complete_config (a full torch/transformers import,
# ~16 s per model on 2 busy cores). Our configs are complete, so it is off;
# set TRITON_AUTO_COMPLETE_CONFIG=1 for models that rely on it.
TRITON_AUTO_COMPLETE_CONFIG="${TRITON_AUTO_COMPLETE_CONFIG:-0}"
# Alternative config per model: "gpu" selects <model>/configs/gpu.pbtxt (ONNX
# Runtime + TensorRT; this wheel has no onnxruntime backend, so it cannot load
# it), "gpu-python" <model>/configs/gpu-python.pbtxt (python backend, KIND_GPU)
# where present, config.pbtxt elsewhere.
TRITON_MODEL_CONFIG_NAME="${TRITON_MODEL_CONFIG_NAME:-}"
# Extra tritonserver flags, word-split on purpose (e.g. "--log-verbose=1").
TRITON_EXTRA_ARGS="${TRITON_EXTRA_ARGS:-}"

triton_log() { printf '[triton] %s\n' "$*" >&2; }
triton_die() { printf '[triton] ERROR: %s\n' "$*" >&2; exit 1; }

# Python major.minor of TRITON_PYTHON, e.g. "3.11".
triton_python_version() {
  "$TRITON_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

# Directory holding libpythonX.Y.so of TRITON_PYTHON (the stub links it).
triton_python_libdir() {
  "$TRITON_PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))'
}

# The bin dir whose `python3` the stub adopts as its environment: the numpy 1.x
# overlay when enabled, else TRITON_PYTHON's own environment.
triton_python_bindir() {
  if [[ -n "$TRITON_STUB_NUMPY" ]]; then
    printf '%s\n' "$TRITON_STUB_ENV/bin"
  else
    "$TRITON_PYTHON" -c 'import os, sys; print(os.path.join(sys.prefix, "bin"))'
  fi
}

triton_require_python() {
  [[ -x "$TRITON_PYTHON" ]] || triton_die "no Python interpreter at $TRITON_PYTHON (set TRITON_PYTHON or create .venv)"
}

# Environment for running tritonserver and its python backend stub.
triton_export_runtime_env() {
  local libdir bindir
  libdir="$(triton_python_libdir)"
  bindir="$(triton_python_bindir)"
  export LD_LIBRARY_PATH="$TRITON_LIBS:$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PATH="$bindir:$PATH"
}

# Whether pid is a live process (a zombie awaiting its reaper counts as gone).
triton_pid_alive() {
  local state
  state="$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
  [[ -n "$state" && "$state" != "Z" && "$state" != "X" ]]
}

# PID from the pid file if that process is alive and is a tritonserver.
triton_running_pid() {
  local pid
  [[ -f "$TRITON_PID_FILE" ]] || return 1
  pid="$(cat "$TRITON_PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  triton_pid_alive "$pid" || return 1
  # Guard against PID reuse: the process must be our tritonserver binary.
  [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)" == "$(readlink -f "$TRITON_BIN")" ]] || return 1
  printf '%s\n' "$pid"
}

triton_http_url() { printf 'http://%s:%s' "$TRITON_HOST" "$TRITON_HTTP_PORT"; }

# HTTP status code of a GET (000 when nothing answers).
triton_http_code() {
  curl -s -o /dev/null -m 2 -w '%{http_code}' "$(triton_http_url)$1" 2>/dev/null || true
}

triton_has_gpu() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}
