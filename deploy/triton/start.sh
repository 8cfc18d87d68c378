#!/usr/bin/env bash
# Start a local tritonserver in the background on 127.0.0.1 over the model
# repository, in explicit model-control mode, and wait until it is ready.
#
# Idempotent: if our server is already running and ready, this is a no-op.
# Settings (env): TRITON_MODEL_REPO, TRITON_MODELS (comma list or "*"),
# TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT, TRITON_RUN_DIR,
# TRITON_START_TIMEOUT (s), TRITON_EXTRA_ARGS. See common.sh.
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=deploy/triton/common.sh
source "$HERE/common.sh"

triton_require_python
"$HERE/fetch.sh"
mkdir -p "$TRITON_RUN_DIR"

if pid="$(triton_running_pid)"; then
  if [[ "$(triton_http_code /v2/health/ready)" == "200" ]]; then
    triton_log "already running (pid $pid) at $(triton_http_url)"
    exit 0
  fi
  triton_die "a tritonserver (pid $pid) is running but not ready; see $TRITON_LOG_FILE or run stop.sh"
fi
rm -f "$TRITON_PID_FILE"

[[ -d "$TRITON_MODEL_REPO" ]] || triton_die "model repository $TRITON_MODEL_REPO does not exist (set TRITON_MODEL_REPO or export models first)"

# Refuse to start on a port someone else holds: the server would otherwise
# die with a bind error buried in its log.
"$TRITON_PYTHON" - "$TRITON_HOST" "$TRITON_HTTP_PORT" "$TRITON_GRPC_PORT" "$TRITON_METRICS_PORT" <<'PY' || exit 1
import socket, sys
host, ports = sys.argv[1], sys.argv[2:]
busy = []
for port in ports:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            busy.append(port)
if busy:
    sys.exit(f"[triton] ERROR: port(s) {', '.join(busy)} on {host} already in use")
PY

load_args=()
if [[ "$TRITON_MODELS" == "*" ]]; then
  load_args+=("--load-model=*")
else
  if [[ -n "$TRITON_MODELS" ]]; then
    IFS=',' read -r -a models <<<"$TRITON_MODELS"
  else
    models=()
    for d in "$TRITON_MODEL_REPO"/*/; do
      [[ -d "$d" ]] && models+=("$(basename "$d")")
    done
  fi
  for m in "${models[@]}"; do
    [[ -d "$TRITON_MODEL_REPO/$m" ]] || triton_die "model $m not found in $TRITON_MODEL_REPO"
    load_args+=("--load-model=$m")
  done
  [[ ${#load_args[@]} -gt 0 ]] || triton_log "warning: no models in $TRITON_MODEL_REPO; starting with none loaded"
fi

args=(
  "--model-repository=$TRITON_MODEL_REPO"
  "--model-control-mode=explicit"
  "${load_args[@]}"
  "--backend-directory=$TRITON_BACKENDS"
  "--http-address=$TRITON_HOST" "--http-port=$TRITON_HTTP_PORT"
  "--grpc-address=$TRITON_HOST" "--grpc-port=$TRITON_GRPC_PORT"
  "--metrics-address=$TRITON_HOST" "--metrics-port=$TRITON_METRICS_PORT"
  "--strict-readiness=true"
  "--exit-timeout-secs=$TRITON_STOP_TIMEOUT"
  "--log-verbose=$TRITON_LOG_VERBOSE"
  # Two servers on one host must not share python-backend shm region names.
  "--backend-config=python,shm-region-prefix-name=textpulse_triton_${TRITON_HTTP_PORT}_"
)
if [[ -n "$TRITON_MODEL_CONFIG_NAME" ]]; then
  args+=("--model-config-name=$TRITON_MODEL_CONFIG_NAME")
fi
if [[ "$TRITON_AUTO_COMPLETE_CONFIG" != "1" ]]; then
  args+=("--disable-auto-complete-config")
fi
if triton_has_gpu; then
  triton_log "GPU detected"
else
  # No CUDA here: pinned (page-locked) host memory and GPU metrics need a driver.
  args+=("--pinned-memory-pool-byte-size=0" "--allow-gpu-metrics=false")
fi
if [[ -n "$TRITON_EXTRA_ARGS" ]]; then
  read -r -a extra <<<"$TRITON_EXTRA_ARGS"
  args+=("${extra[@]}")
fi

triton_export_runtime_env
: >"$TRITON_LOG_FILE"
printf '%q ' "$TRITON_BIN" "${args[@]}" >"$TRITON_RUN_DIR/cmdline"
started_ns="$(date +%s%N)"
# Own session: a Ctrl-C in the caller's terminal does not reach the server,
# and stop.sh can signal its whole process group (the python stubs).
setsid "$TRITON_BIN" "${args[@]}" >>"$TRITON_LOG_FILE" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$TRITON_PID_FILE"
triton_log "started pid $pid (log $TRITON_LOG_FILE), waiting up to ${TRITON_START_TIMEOUT}s for readiness"

deadline=$(( $(date +%s) + TRITON_START_TIMEOUT ))
while true; do
  if ! triton_pid_alive "$pid"; then
    triton_log "tritonserver exited during start-up; last log lines:"
    tail -n 60 "$TRITON_LOG_FILE" >&2 || true
    rm -f "$TRITON_PID_FILE"
    exit 1
  fi
  if [[ "$(triton_http_code /v2/health/ready)" == "200" ]]; then
    break
  fi
  if (( $(date +%s) >= deadline )); then
    triton_log "not ready after ${TRITON_START_TIMEOUT}s; last log lines:"
    tail -n 60 "$TRITON_LOG_FILE" >&2 || true
    "$HERE/stop.sh" || true
    exit 1
  fi
  sleep 0.5
done
elapsed_ms=$(( ($(date +%s%N) - started_ns) / 1000000 ))
echo "$elapsed_ms" >"$TRITON_RUN_DIR/startup_ms"
triton_log "ready in ${elapsed_ms} ms: HTTP $(triton_http_url), gRPC $TRITON_HOST:$TRITON_GRPC_PORT, metrics http://$TRITON_HOST:$TRITON_METRICS_PORT/metrics"
