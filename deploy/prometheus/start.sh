#!/usr/bin/env bash
# Start the local Prometheus on 127.0.0.1:$PROM_PORT (9090) in the background
# and wait until /-/ready answers.
#   Renders deploy/prometheus/prometheus.yml and the file_sd target files into
#   $PROM_RUN_DIR (.run/prometheus) with the overrides of lib.sh applied
#   (PROM_TARGET_<JOB>, PROM_ALERTMANAGER, TEXTPULSE_ENV), checks them with
#   promtool, then starts prometheus with data, pid and log in the run dir.
# Idempotent: when ours is already running, the rendered files are refreshed
# and it is told to reload (POST /-/reload), nothing is restarted.
set -euo pipefail
# shellcheck source=deploy/prometheus/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_bin "$PROM_BIN" prometheus
require_bin "$PROMTOOL_BIN" promtool

pid="$(prom_pid)"
prom_render
"$PROMTOOL_BIN" check config "$PROM_CONFIG" >"$PROM_RUN_DIR/check-config.out" 2>&1 \
  || { cat "$PROM_RUN_DIR/check-config.out" >&2; die "promtool check config failed for $PROM_CONFIG"; }

if [[ -n "$pid" ]]; then
  if http_ok "$PROM_URL/-/ready"; then
    curl -fsS --max-time 10 -X POST "$PROM_URL/-/reload" >/dev/null \
      || die "pid $pid is running but refused POST /-/reload (see $PROM_LOG_FILE)"
    log "already running (pid $pid) on $PROM_URL; config and targets re-rendered and reloaded"
    exit 0
  fi
  log "pid $pid is running but not ready yet; waiting for it"
else
  rm -f "$PROM_PID_FILE"
  port_open "$PROM_PORT" \
    && die "port 127.0.0.1:$PROM_PORT is in use by another process (not the Prometheus of $PROM_RUN_DIR); stop it or set PROM_PORT"
  args=(
    "--config.file=$PROM_CONFIG"
    "--storage.tsdb.path=$PROM_DATA_DIR"
    "--storage.tsdb.retention.time=$PROM_RETENTION"
    "--web.listen-address=127.0.0.1:$PROM_PORT"
    "--web.external-url=$PROM_URL/"
    # POST /-/reload: lets start.sh and tests apply new targets without a restart.
    --web.enable-lifecycle
  )
  # shellcheck disable=SC2206  # PROM_EXTRA_ARGS is a list of flags
  args+=($PROM_EXTRA_ARGS)
  log "starting $("$PROM_BIN" --version 2>&1 | head -n1 | cut -d' ' -f1-3) on $PROM_URL (env=$TEXTPULSE_ENV, alertmanager $PROM_ALERTMANAGER)"
  # setsid: own session, so a Ctrl-C in the caller's terminal does not reach it.
  setsid nohup "$PROM_BIN" "${args[@]}" >>"$PROM_LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PROM_PID_FILE"
fi

wait_ready "$pid" "$PROM_URL/-/ready" "$PROM_START_TIMEOUT" "$PROM_LOG_FILE"
log "ready: pid $pid, $PROM_URL (targets $PROM_TARGETS_DIR, log $PROM_LOG_FILE)"
