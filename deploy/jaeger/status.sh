#!/usr/bin/env bash
# Report whether the local Jaeger of $JAEGER_RUN_DIR is running and answering,
# and which services have sent it spans.
# Exit 0: running and ready; 1: not running; 2: running but not ready.
set -euo pipefail
# shellcheck source=deploy/jaeger/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pid="$(jaeger_pid)"
if [[ -z "$pid" ]]; then
  echo "jaeger: not running (run dir $JAEGER_RUN_DIR)"
  exit 1
fi
if ! services="$(curl -fsS --max-time 3 "$JAEGER_URL/api/services" 2>/dev/null)"; then
  echo "jaeger: pid $pid running but NOT answering at $JAEGER_URL (log $JAEGER_LOG_FILE)"
  exit 2
fi
names="$(grep -o '"data":\[[^]]*\]' <<<"$services" | sed 's/"data":\[//; s/\]//; s/"//g' || true)"
echo "jaeger: running (pid $pid), query $JAEGER_URL, OTLP/HTTP $JAEGER_OTLP_URL, services: ${names:-none yet}, log $JAEGER_LOG_FILE"
