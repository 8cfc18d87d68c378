#!/usr/bin/env bash
# Start the local Jaeger (all-in-one, in-memory storage) on 127.0.0.1 in the
# background and wait until its query API answers and its OTLP receiver listens.
#   OTLP/HTTP  http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT (4318)  <- the services export here
#   query/UI   http://127.0.0.1:$JAEGER_QUERY_PORT (16686)     -> /search, /api/traces
# The binary is built by deploy/jaeger/build.sh (make jaeger-build); settings in lib.sh.
# Idempotent: when ours is already running, nothing is restarted.
set -euo pipefail
# shellcheck source=deploy/jaeger/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -n "$JAEGER_BIN" ]] \
  || die "jaeger $JAEGER_VERSION is not built: run deploy/jaeger/build.sh (make jaeger-build) or set JAEGER_BIN"

pid="$(jaeger_pid)"
if [[ -n "$pid" ]]; then
  if http_ok "$JAEGER_URL/api/services" && port_open "$JAEGER_OTLP_HTTP_PORT"; then
    log "already running (pid $pid): query $JAEGER_URL, OTLP/HTTP $JAEGER_OTLP_URL"
    exit 0
  fi
  log "pid $pid is running but not ready yet; waiting for it"
else
  rm -f "$JAEGER_PID_FILE"
  for port in "$JAEGER_OTLP_HTTP_PORT" "$JAEGER_OTLP_GRPC_PORT" "$JAEGER_QUERY_PORT" "$JAEGER_QUERY_GRPC_PORT" \
    "$JAEGER_HEALTH_PORT" "$JAEGER_METRICS_PORT"; do
    port_open "$port" \
      && die "port 127.0.0.1:$port is in use by another process (not the Jaeger of $JAEGER_RUN_DIR); stop it or set the JAEGER_*_PORT variables"
  done
  mkdir -p "$JAEGER_RUN_DIR"
  cp "$JAEGER_DEPLOY_DIR/jaeger.yaml" "$JAEGER_CONFIG.tmp"
  mv -f "$JAEGER_CONFIG.tmp" "$JAEGER_CONFIG"
  log "starting jaeger $JAEGER_VERSION: query $JAEGER_URL, OTLP/HTTP $JAEGER_OTLP_URL (log $JAEGER_LOG_FILE)"
  setsid nohup "$JAEGER_BIN" "--config=$JAEGER_CONFIG" >>"$JAEGER_LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$JAEGER_PID_FILE"
fi

wait_ready "$pid" "$JAEGER_URL/api/services" "$JAEGER_START_TIMEOUT" "$JAEGER_LOG_FILE"
deadline=$(($(date +%s) + JAEGER_START_TIMEOUT))
until port_open "$JAEGER_OTLP_HTTP_PORT"; do
  (($(date +%s) < deadline)) || die "OTLP/HTTP receiver not listening on $JAEGER_OTLP_HTTP_PORT (log $JAEGER_LOG_FILE)"
  sleep 0.2
done
log "ready: pid $pid, query $JAEGER_URL, OTLP/HTTP $JAEGER_OTLP_URL (services: TEXTPULSE_OTLP_ENDPOINT=$JAEGER_OTLP_URL)"
