#!/usr/bin/env bash
# Report whether the local broker of $KAFKA_RUN_DIR is running and answering.
# Exit 0: running and answering metadata; 1: not running; 2: running but not
# answering (starting, or wedged: see the log).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pid="$(broker_pid)"
if [[ -z "$pid" ]]; then
  echo "kafka: not running (run dir $KAFKA_RUN_DIR)"
  exit 1
fi
if ! wait_for_broker 0 2>/dev/null; then
  echo "kafka: pid $pid running but NOT answering on 127.0.0.1:$KAFKA_PORT (log $KAFKA_LOG_FILE)"
  exit 2
fi
metrics="off"
if [[ "$KAFKA_JMX_EXPORTER" != 0 ]]; then
  if port_open "$KAFKA_JMX_EXPORTER_PORT"; then
    metrics="http://127.0.0.1:$KAFKA_JMX_EXPORTER_PORT/metrics"
  else
    metrics="not serving on :$KAFKA_JMX_EXPORTER_PORT"
  fi
fi
echo "kafka: running (pid $pid), answering on 127.0.0.1:$KAFKA_PORT, controller :$KAFKA_CONTROLLER_PORT, metrics $metrics, log $KAFKA_LOG_FILE"
