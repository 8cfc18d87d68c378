#!/usr/bin/env bash
# `make pipeline-down`: stop the services `make pipeline-up` started, by their
# pid files only (SIGTERM, SIGKILL after PIPELINE_STOP_TIMEOUT seconds), in
# the reverse order. Kafka and the topics stay. Idempotent.
set -euo pipefail
# shellcheck source=deploy/pipeline/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

read -ra services <<<"$PIPELINE_SERVICES"
# Prometheus first drops the targets (an empty PROM_TARGET_<JOB> = no target), then they stop:
# a scrape of a stopping service would record up == 0 and start TextpulseTargetDown.
if [[ -d "${PROM_RUN_DIR:-$OBS_REPO_ROOT/.run/prometheus}/targets" ]]; then
  for svc in "${services[@]}"; do export "PROM_TARGET_${svc^^}="; done
  pipeline_refresh_prometheus
  sleep 2 # file_sd picks the change up on its file watch; let it land before the first SIGTERM
  for svc in "${services[@]}"; do unset "PROM_TARGET_${svc^^}"; done
fi
for ((i = ${#services[@]} - 1; i >= 0; i--)); do
  svc="${services[i]}"
  pid="$(pipeline_pid "$svc")"
  if [[ -n "$pid" ]]; then
    log "stopping $svc (pid $pid; SIGTERM, SIGKILL after ${PIPELINE_STOP_TIMEOUT}s)"
    stop_pid "$pid" "$PIPELINE_STOP_TIMEOUT"
  fi
  rm -f "$PIPELINE_RUN_DIR/$svc.pid" "$PIPELINE_RUN_DIR/$svc.port"
done
pipeline_refresh_prometheus
log "stopped (logs kept in $PIPELINE_RUN_DIR)"
