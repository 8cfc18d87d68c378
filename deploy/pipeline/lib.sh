# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Settings of the local pipeline (sourced by up/down/status.sh): ingest,
# classify, ner, route and alert as background processes on the real Kafka.
#
#   PIPELINE_RUN_DIR      pid, port and log files (.run/pipeline)
#   PIPELINE_SERVICES     which services, in start order (ingest classify ner route alert)
#   PIPELINE_PYTHON       interpreter (.venv/bin/python)
#   PIPELINE_READY_TIMEOUT / PIPELINE_STOP_TIMEOUT   seconds (300 / 30)
#   TEXTPULSE_<SERVICE>_HTTP_PORT   a service's port (its settings' default otherwise)
#   TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS, TEXTPULSE_MODEL_REPO, …: passed through,
#                         every service reads its normal settings
#
# Shares log/die/owned_pid/wait_ready/stop_pid/write_atomic with the
# Prometheus scripts (deploy/prometheus/common.sh).

OBS_COMPONENT=pipeline
# shellcheck source=deploy/prometheus/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../prometheus/common.sh"

PIPELINE_RUN_DIR="$(realpath -m "${PIPELINE_RUN_DIR:-$OBS_REPO_ROOT/.run/pipeline}")"
PIPELINE_SERVICES="${PIPELINE_SERVICES:-ingest classify ner route alert}"
PIPELINE_PYTHON="${PIPELINE_PYTHON:-$OBS_REPO_ROOT/.venv/bin/python}"
PIPELINE_READY_TIMEOUT="${PIPELINE_READY_TIMEOUT:-300}"
PIPELINE_STOP_TIMEOUT="${PIPELINE_STOP_TIMEOUT:-30}"
PIPELINE_BOOTSTRAP="${TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"

# Default ports of the port plan (each service's settings.py; deploy/prometheus/targets).
declare -A PIPELINE_DEFAULT_PORT=([ingest]=8080 [classify]=8081 [ner]=8082 [alert]=8083 [route]=8084)

pipeline_port() {
  local var="TEXTPULSE_${1^^}_HTTP_PORT"
  echo "${!var:-${PIPELINE_DEFAULT_PORT[$1]}}"
}

# PID of a service this script started, only if that process still runs our
# interpreter with `-m services.<name>.app` (a recycled PID is never trusted).
pipeline_pid() {
  local python
  python="$(readlink -f "$PIPELINE_PYTHON" 2>/dev/null || true)"
  [[ -n "$python" ]] || return 0
  owned_pid "$PIPELINE_RUN_DIR/$1.pid" "$python" "services.$1.app"
}

# Re-render the Prometheus target files when our Prometheus has rendered them
# (it re-reads file_sd files on change), so it scrapes exactly what runs.
pipeline_refresh_prometheus() {
  local targets="${PROM_RUN_DIR:-$OBS_REPO_ROOT/.run/prometheus}/targets"
  [[ -d "$targets" ]] || return 0
  bash "$OBS_REPO_ROOT/deploy/prometheus/targets.sh" \
    || log "could not refresh the Prometheus targets in $targets (run: make prom-up)"
}
