#!/usr/bin/env bash
# Start the local Alertmanager on 127.0.0.1:$AM_PORT (9093), clustering off,
# in the background and wait until /-/ready answers.
#   Renders deploy/alertmanager/alertmanager.yml into $AM_RUN_DIR
#   (.run/alertmanager) with AM_WEBHOOK_URL applied, checks it with amtool,
#   keeps silences and notification state in the run dir's data/.
# Idempotent: when ours is already running, the config is re-rendered and
# reloaded (POST /-/reload), nothing is restarted.
set -euo pipefail
# shellcheck source=deploy/alertmanager/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_bin "$AM_BIN" prometheus-alertmanager

pid="$(am_pid)"
am_render
if [[ -n "$AMTOOL_BIN" ]]; then
  "$AMTOOL_BIN" check-config "$AM_CONFIG" >"$AM_RUN_DIR/check-config.out" 2>&1 \
    || { cat "$AM_RUN_DIR/check-config.out" >&2; die "amtool check-config failed for $AM_CONFIG"; }
fi

if [[ -n "$pid" ]]; then
  if http_ok "$AM_URL/-/ready"; then
    curl -fsS --max-time 10 -X POST "$AM_URL/-/reload" >/dev/null \
      || die "pid $pid is running but refused POST /-/reload (see $AM_LOG_FILE)"
    log "already running (pid $pid) on $AM_URL; config re-rendered and reloaded"
    exit 0
  fi
  log "pid $pid is running but not ready yet; waiting for it"
else
  rm -f "$AM_PID_FILE"
  port_open "$AM_PORT" \
    && die "port 127.0.0.1:$AM_PORT is in use by another process (not the Alertmanager of $AM_RUN_DIR); stop it or set AM_PORT"
  args=(
    "--config.file=$AM_CONFIG"
    "--storage.path=$AM_DATA_DIR"
    "--web.listen-address=127.0.0.1:$AM_PORT"
    "--web.external-url=$AM_URL/"
    # Single instance: no gossip listener (it would bind 0.0.0.0:9094).
    "--cluster.listen-address="
  )
  # shellcheck disable=SC2206  # AM_EXTRA_ARGS is a list of flags
  args+=($AM_EXTRA_ARGS)
  log "starting $("$AM_BIN" --version 2>&1 | head -n1 | cut -d' ' -f1-3) on $AM_URL (webhook $AM_WEBHOOK_URL)"
  setsid nohup "$AM_BIN" "${args[@]}" >>"$AM_LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$AM_PID_FILE"
fi

wait_ready "$pid" "$AM_URL/-/ready" "$AM_START_TIMEOUT" "$AM_LOG_FILE"
log "ready: pid $pid, $AM_URL (API $AM_URL/api/v2/, log $AM_LOG_FILE)"
