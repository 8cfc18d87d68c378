#!/usr/bin/env bash
# Report the local tritonserver: process, readiness, and each model's state.
# Exit 0 when running and ready, 1 when not running, 2 when running, not ready.
set -euo pipefail
# shellcheck source=deploy/triton/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if ! pid="$(triton_running_pid)"; then
  echo "tritonserver: not running (run dir $TRITON_RUN_DIR)"
  exit 1
fi
ready="$(triton_http_code /v2/health/ready)"
echo "tritonserver: pid $pid, HTTP $(triton_http_url) (ready: $([[ "$ready" == 200 ]] && echo yes || echo "no, $ready")), gRPC $TRITON_HOST:$TRITON_GRPC_PORT, metrics $TRITON_HOST:$TRITON_METRICS_PORT"
echo "log: $TRITON_LOG_FILE"
index="$(curl -s -m 5 -X POST "$(triton_http_url)/v2/repository/index" 2>/dev/null || true)"
if [[ -n "$index" ]]; then
  "$TRITON_PYTHON" -c '
import json, sys
for m in json.loads(sys.argv[1]):
    print("  model {:<32} version {:<4} {}{}".format(
        m.get("name", "?"), m.get("version", "-"), m.get("state", "UNAVAILABLE"),
        (" (" + m["reason"] + ")") if m.get("reason") else ""))
' "$index"
fi
[[ "$ready" == 200 ]] || exit 2
