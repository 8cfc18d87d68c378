#!/usr/bin/env bash
# Stop the local node of $ES_RUN_DIR (default .run/elasticsearch).
#   stop.sh          SIGTERM (graceful close), SIGKILL after ES_STOP_TIMEOUT s
#   stop.sh --kill   SIGKILL at once, for crash/recovery tests
#   stop.sh --wipe   stop, then delete data, logs and config (fresh cluster)
# Idempotent: nothing running is not an error.
set -euo pipefail
# shellcheck source=deploy/elasticsearch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode="term"
wipe=0
for arg in "$@"; do
  case "$arg" in
    --kill | --kill9) mode="kill" ;;
    --wipe) wipe=1 ;;
    -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
    *) die "unknown option: $arg (use --kill, --wipe)" ;;
  esac
done

pid="$(node_pid)"
if [[ -z "$pid" ]]; then
  log "not running (run dir $ES_RUN_DIR)"
else
  if [[ "$mode" == kill ]]; then
    log "killing pid $pid with SIGKILL"
    kill -KILL "$pid"
  else
    log "stopping pid $pid (SIGTERM, up to ${ES_STOP_TIMEOUT}s)"
    kill -TERM "$pid"
  fi
  deadline=$(($(date +%s) + ES_STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if (($(date +%s) >= deadline)); then
      log "pid $pid still alive after ${ES_STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$(($(date +%s) + 10))
    fi
    sleep 0.2
  done
  log "stopped"
fi
rm -f "$ES_PID_FILE"

if ((wipe)); then
  log "wiping $ES_DATA_DIR, $ES_LOGS_DIR, $ES_CONFIG_DIR"
  rm -rf "$ES_DATA_DIR" "$ES_LOGS_DIR" "$ES_CONFIG_DIR" "$ES_TMP_DIR" "$ES_OUT_FILE"
fi
