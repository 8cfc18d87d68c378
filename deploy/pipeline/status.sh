#!/usr/bin/env bash
# `make status`: one line per component of the local stack — Kafka,
# Prometheus, Alertmanager, Elasticsearch, Triton and the pipeline services
# (by their pid files and /ready). Exit 0 always: it reports, it does not judge.
set -uo pipefail
# shellcheck source=deploy/pipeline/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$OBS_REPO_ROOT"

for script in deploy/kafka/status.sh deploy/prometheus/status.sh deploy/alertmanager/status.sh deploy/jaeger/status.sh \
  deploy/elasticsearch/status.sh deploy/triton/status.sh; do
  [[ -f "$script" ]] && bash "$script" 2>&1 | sed -n '1p'
done
for svc in ingest classify ner route alert; do
  pid="$(pipeline_pid "$svc")"
  if [[ -z "$pid" ]]; then
    echo "$svc: not running (make pipeline-up)"
    continue
  fi
  port="$(cat "$PIPELINE_RUN_DIR/$svc.port" 2>/dev/null || pipeline_port "$svc")"
  if http_ok "http://127.0.0.1:$port/ready"; then
    echo "$svc: running (pid $pid), ready at http://127.0.0.1:$port, log $PIPELINE_RUN_DIR/$svc.log"
  else
    echo "$svc: pid $pid running but NOT ready at http://127.0.0.1:$port (log $PIPELINE_RUN_DIR/$svc.log)"
  fi
done
