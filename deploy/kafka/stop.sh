#!/usr/bin/env bash
# Stop the local broker of $KAFKA_RUN_DIR (default .run/kafka).
#   stop.sh          SIGTERM (controlled shutdown), SIGKILL after KAFKA_STOP_TIMEOUT s
#   stop.sh --kill   SIGKILL at once, for crash/recovery tests
#   stop.sh --wipe   stop, then delete the data dir and cluster id (fresh cluster)
# Idempotent: nothing running is not an error.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
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

pid="$(broker_pid)"
if [[ -z "$pid" ]]; then
  log "not running (run dir $KAFKA_RUN_DIR)"
else
  if [[ "$mode" == kill ]]; then
    log "killing pid $pid with SIGKILL"
    kill -KILL "$pid"
  else
    log "stopping pid $pid (SIGTERM, up to ${KAFKA_STOP_TIMEOUT}s)"
    kill -TERM "$pid"
  fi
  deadline=$(($(date +%s) + KAFKA_STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if (($(date +%s) >= deadline)); then
      log "pid $pid still alive after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$(($(date +%s) + 10))
    fi
    sleep 0.2
  done
  log "stopped"
fi
rm -f "$KAFKA_PID_FILE"

if ((wipe)); then
  log "wiping $KAFKA_DATA_DIR"
  rm -rf "$KAFKA_DATA_DIR" "$KAFKA_CLUSTER_ID_FILE" "$KAFKA_CONFIG_FILE"
fi
