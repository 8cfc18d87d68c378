#!/usr/bin/env bash
# Report whether the local Alertmanager of $AM_RUN_DIR is running and ready,
# and how many alerts it holds.
# Exit 0: running and ready; 1: not running; 2: running but not ready.
set -euo pipefail
# shellcheck source=deploy/alertmanager/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pid="$(am_pid)"
if [[ -z "$pid" ]]; then
  echo "alertmanager: not running (run dir $AM_RUN_DIR)"
  exit 1
fi
if ! http_ok "$AM_URL/-/ready"; then
  echo "alertmanager: pid $pid running but NOT ready at $AM_URL (log $AM_LOG_FILE)"
  exit 2
fi
alerts="$(curl -fsS --max-time 5 "$AM_URL/api/v2/alerts?active=true&silenced=false&inhibited=false" 2>/dev/null \
  | grep -o '"fingerprint"' | wc -l || true)"
echo "alertmanager: running (pid $pid), ready at $AM_URL, ${alerts// /} active alert(s), webhook $AM_WEBHOOK_URL, log $AM_LOG_FILE"
