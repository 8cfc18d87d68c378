#!/usr/bin/env bash
# Stop the local Alertmanager of $AM_RUN_DIR (default .run/alertmanager) by
# the PID it wrote: SIGTERM, SIGKILL after AM_STOP_TIMEOUT seconds.
#   stop.sh          stop, keep silences and notification log
#   stop.sh --wipe   stop, then delete the data dir and rendered config
# Idempotent: nothing running is not an error.
set -euo pipefail
# shellcheck source=deploy/alertmanager/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wipe=0
for arg in "$@"; do
  case "$arg" in
    --wipe) wipe=1 ;;
    -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
    *) die "unknown option: $arg (use --wipe)" ;;
  esac
done

pid="$(am_pid)"
if [[ -z "$pid" ]]; then
  log "not running (run dir $AM_RUN_DIR)"
else
  log "stopping pid $pid (SIGTERM, up to ${AM_STOP_TIMEOUT}s)"
  stop_pid "$pid" "$AM_STOP_TIMEOUT"
  log "stopped"
fi
rm -f "$AM_PID_FILE"

if ((wipe)); then
  log "wiping $AM_DATA_DIR and the rendered config"
  rm -rf "$AM_DATA_DIR" "$AM_CONFIG" "$AM_RUN_DIR/check-config.out"
fi
