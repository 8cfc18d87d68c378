#!/usr/bin/env bash
# Report whether the local Prometheus of $PROM_RUN_DIR is running and ready,
# with its scrape targets' health.
# Exit 0: running and ready; 1: not running; 2: running but not ready.
set -euo pipefail
# shellcheck source=deploy/prometheus/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pid="$(prom_pid)"
if [[ -z "$pid" ]]; then
  echo "prometheus: not running (run dir $PROM_RUN_DIR)"
  exit 1
fi
if ! http_ok "$PROM_URL/-/ready"; then
  echo "prometheus: pid $pid running but NOT ready at $PROM_URL (log $PROM_LOG_FILE)"
  exit 2
fi
echo "prometheus: running (pid $pid), ready at $PROM_URL, log $PROM_LOG_FILE"
# One line per target: job, scrape URL, health (from the targets API).
if command -v python3 >/dev/null; then
  curl -fsS --max-time 5 "$PROM_URL/api/v1/targets?state=active" 2>/dev/null | python3 -c '
import json, sys
for t in sorted(json.load(sys.stdin)["data"]["activeTargets"], key=lambda t: t["scrapePool"]):
    row = (t["scrapePool"], t["scrapeUrl"], t["health"], (t.get("lastError") or "")[:80])
    print(("  %-13s %-36s %-8s %s" % row).rstrip())
' || true
fi
