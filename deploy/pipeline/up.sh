#!/usr/bin/env bash
# `make pipeline-up`: start ingest, classify, ner, route and alert on the real
# Kafka with the exported models, each in the background (own session) with
# its pid, port and log under $PIPELINE_RUN_DIR (.run/pipeline), and wait for
# each /ready. Starts the local broker (deploy/kafka/start.sh) when the
# default bootstrap does not answer, and creates the declared topics.
# Idempotent: a service already running (by its pid file) is left alone.
set -euo pipefail
# shellcheck source=deploy/pipeline/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -x "$PIPELINE_PYTHON" ]] || die "$PIPELINE_PYTHON not found: run make install"
cd "$OBS_REPO_ROOT"

# The models: each service loads what its own settings name (classify's heads, NER's model) from
# TEXTPULSE_MODEL_REPO; a repository that is not there at all is refused here, a model missing from
# it is named (with `make models`) when the service that wants it exits at start-up, below.
repo="$(realpath -m "${TEXTPULSE_MODEL_REPO:-$OBS_REPO_ROOT/.cache/model-repo}")"
[[ -n "$(ls -A "$repo" 2>/dev/null)" ]] \
  || die "no exported models in $repo: run \`make models\` (quick profile, ~10 min) first, or set TEXTPULSE_MODEL_REPO"

if [[ "$PIPELINE_BOOTSTRAP" == "127.0.0.1:9092" || "$PIPELINE_BOOTSTRAP" == "localhost:9092" ]]; then
  bash deploy/kafka/status.sh >/dev/null 2>&1 || { log "starting the local Kafka (deploy/kafka/start.sh)"; bash deploy/kafka/start.sh; }
fi
log "creating the declared topics on $PIPELINE_BOOTSTRAP (existing ones are kept)"
"$PIPELINE_PYTHON" -m textpulse.cli topics create >/dev/null

# Tracing: with the local Jaeger of `make up` listening and no endpoint chosen, every service exports to it.
if [[ -z "${TEXTPULSE_OTLP_ENDPOINT:-}${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]] && port_open "${JAEGER_OTLP_HTTP_PORT:-4318}"; then
  export TEXTPULSE_OTLP_ENDPOINT="http://127.0.0.1:${JAEGER_OTLP_HTTP_PORT:-4318}"
  log "tracing to $TEXTPULSE_OTLP_ENDPOINT (Jaeger UI: http://127.0.0.1:${JAEGER_QUERY_PORT:-16686})"
fi

mkdir -p "$PIPELINE_RUN_DIR"
declare -A started=() log_offset=()
for svc in $PIPELINE_SERVICES; do
  [[ -n "${PIPELINE_DEFAULT_PORT[$svc]:-}" ]] || die "unknown service '$svc' in PIPELINE_SERVICES (known: ${!PIPELINE_DEFAULT_PORT[*]})"
  port="$(pipeline_port "$svc")"
  pid="$(pipeline_pid "$svc")"
  if [[ -n "$pid" ]]; then
    log "$svc already running (pid $pid, port $(cat "$PIPELINE_RUN_DIR/$svc.port" 2>/dev/null || echo "$port"))"
    continue
  fi
  port_open "$port" && die "port 127.0.0.1:$port (for $svc) is in use by another process; stop it or set TEXTPULSE_${svc^^}_HTTP_PORT"
  logfile="$PIPELINE_RUN_DIR/$svc.log"
  log_offset[$svc]="$(stat -c %s "$logfile" 2>/dev/null || echo 0)" # logs are appended across runs
  # setsid: own session, so a Ctrl-C in the caller's terminal does not reach it.
  env "TEXTPULSE_${svc^^}_HTTP_PORT=$port" setsid nohup "$PIPELINE_PYTHON" -m "services.$svc.app" \
    >>"$logfile" 2>&1 </dev/null &
  echo $! >"$PIPELINE_RUN_DIR/$svc.pid"
  echo "$port" >"$PIPELINE_RUN_DIR/$svc.port"
  started[$svc]=$!
done

# All start together (model loading overlaps); then wait for each one's /ready. A service that
# fails stops what this run started (nothing half-up is left behind) and names the cause.
for svc in $PIPELINE_SERVICES; do
  [[ -n "${started[$svc]:-}" ]] || continue
  if ! failure="$(wait_ready "${started[$svc]}" "http://127.0.0.1:$(cat "$PIPELINE_RUN_DIR/$svc.port")/ready" \
    "$PIPELINE_READY_TIMEOUT" "$PIPELINE_RUN_DIR/$svc.log" 2>&1)"; then
    for other in "${!started[@]}"; do
      stop_pid "${started[$other]}" "$PIPELINE_STOP_TIMEOUT"
      rm -f "$PIPELINE_RUN_DIR/$other.pid" "$PIPELINE_RUN_DIR/$other.port"
    done
    # A model the service's settings name but the repository lacks: say so in one line.
    missing_model="$(tail -c "+$((log_offset[$svc] + 1))" "$PIPELINE_RUN_DIR/$svc.log" \
      | grep -o "model '[^']*' not found in [^ ]*" | tail -n1 || true)"
    [[ -n "$missing_model" ]] && die "$svc: $missing_model: run \`make models\` (or set TEXTPULSE_MODEL_REPO)"
    printf '%s\n' "$failure" >&2 # the log's last lines and why
    die "$svc did not become ready (log $PIPELINE_RUN_DIR/$svc.log); stopped what this run started"
  fi
done
pipeline_refresh_prometheus

echo "pipeline on Kafka $PIPELINE_BOOTSTRAP (models: $repo):"
for svc in $PIPELINE_SERVICES; do
  printf '  %-9s pid %-8s http://127.0.0.1:%-5s log %s\n' "$svc" "$(pipeline_pid "$svc")" \
    "$(cat "$PIPELINE_RUN_DIR/$svc.port")" "$PIPELINE_RUN_DIR/$svc.log"
done
echo "write to text.in with any Kafka client, or POST http://127.0.0.1:$(pipeline_port ingest)/v1/events; stop with: make pipeline-down"
