#!/usr/bin/env bash
# Stop the local Jaeger of $JAEGER_RUN_DIR (default .run/jaeger) by the PID it
# wrote: SIGTERM, SIGKILL after JAEGER_STOP_TIMEOUT seconds. Its traces live in
# memory and go with it. Idempotent: nothing running is not an error.
set -euo pipefail
# shellcheck source=deploy/jaeger/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pid="$(jaeger_pid)"
if [[ -z "$pid" ]]; then
  log "not running (run dir $JAEGER_RUN_DIR)"
else
  log "stopping pid $pid (SIGTERM, up to ${JAEGER_STOP_TIMEOUT}s)"
  stop_pid "$pid" "$JAEGER_STOP_TIMEOUT"
  log "stopped"
fi
rm -f "$JAEGER_PID_FILE"
