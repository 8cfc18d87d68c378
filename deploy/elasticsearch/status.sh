#!/usr/bin/env bash
# Report whether the local node of $ES_RUN_DIR is running and healthy.
# Exit 0: running, cluster yellow or green; 1: not running; 2: running but
# not answering or red (starting, or wedged: see the log).
set -euo pipefail
# shellcheck source=deploy/elasticsearch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pid="$(node_pid)"
if [[ -z "$pid" ]]; then
  echo "elasticsearch: not running (run dir $ES_RUN_DIR)"
  exit 1
fi
if ! cluster_ready 1s; then
  echo "elasticsearch: pid $pid running but NOT ready on $ES_URL (status: $(cluster_status || true); log $ES_LOG_FILE)"
  exit 2
fi
echo "elasticsearch: running (pid $pid), $ES_VERSION, cluster $(cluster_status) on $ES_URL, transport :$ES_TRANSPORT_PORT, log $ES_LOG_FILE"
