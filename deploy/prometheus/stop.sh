#!/usr/bin/env bash
# Stop the local Prometheus of $PROM_RUN_DIR (default .run/prometheus) by the
# PID it wrote: SIGTERM, SIGKILL after PROM_STOP_TIMEOUT seconds.
#   stop.sh          stop, keep the data
#   stop.sh --wipe   stop, then delete the data dir and rendered files
# Idempotent: nothing running is not an error.
set -euo pipefail
# shellcheck source=deploy/prometheus/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wipe=0
for arg in "$@"; do
  case "$arg" in
    --wipe) wipe=1 ;;
    -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
    *) die "unknown option: $arg (use --wipe)" ;;
  esac
done

pid="$(prom_pid)"
if [[ -z "$pid" ]]; then
  log "not running (run dir $PROM_RUN_DIR)"
else
  log "stopping pid $pid (SIGTERM, up to ${PROM_STOP_TIMEOUT}s)"
  stop_pid "$pid" "$PROM_STOP_TIMEOUT"
  log "stopped"
fi
rm -f "$PROM_PID_FILE"

if ((wipe)); then
  log "wiping $PROM_DATA_DIR and the rendered config"
  rm -rf "$PROM_DATA_DIR" "$PROM_TARGETS_DIR" "$PROM_CONFIG" "$PROM_RUN_DIR/check-config.out"
fi
