# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Settings of the local Alertmanager (sourced by start/stop/status.sh). Every
# setting is an environment variable with a default, so a test can run a
# second instance on other ports and another run dir.
#
#   AM_PORT             API/UI port on 127.0.0.1 (9093); clustering is off
#   AM_RUN_DIR          config copy, data, pid, log (.run/alertmanager)
#   AM_WEBHOOK_URL      where every receiver posts (http://127.0.0.1:9097/alertmanager)
#   AM_START_TIMEOUT / AM_STOP_TIMEOUT   seconds (30 / 20)
#   AM_BIN / AMTOOL_BIN   binaries (prometheus-alertmanager / amtool from PATH)
#   AM_EXTRA_ARGS       extra flags, word-split

OBS_COMPONENT=alertmanager
# shellcheck source=deploy/prometheus/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../prometheus/common.sh"

AM_DEPLOY_DIR="$OBS_REPO_ROOT/deploy/alertmanager"
AM_PORT="${AM_PORT:-9093}"
AM_RUN_DIR="$(realpath -m "${AM_RUN_DIR:-$OBS_REPO_ROOT/.run/alertmanager}")"
AM_DEFAULT_WEBHOOK_URL="http://127.0.0.1:9097/alertmanager"
AM_WEBHOOK_URL="${AM_WEBHOOK_URL:-$AM_DEFAULT_WEBHOOK_URL}"
[[ "$AM_WEBHOOK_URL" =~ ^https?://[^[:space:]|]+$ ]] \
  || die "AM_WEBHOOK_URL must be an http(s) URL (got: '$AM_WEBHOOK_URL')"
AM_START_TIMEOUT="${AM_START_TIMEOUT:-30}"
AM_STOP_TIMEOUT="${AM_STOP_TIMEOUT:-20}"
AM_EXTRA_ARGS="${AM_EXTRA_ARGS:-}"

AM_CONFIG="$AM_RUN_DIR/alertmanager.yml"
AM_DATA_DIR="$AM_RUN_DIR/data"
AM_PID_FILE="$AM_RUN_DIR/alertmanager.pid"
AM_LOG_FILE="$AM_RUN_DIR/alertmanager.log"
AM_URL="http://127.0.0.1:$AM_PORT"

# Debian names the binary prometheus-alertmanager; upstream tarballs alertmanager.
AM_BIN="$(find_bin "${AM_BIN:-}" prometheus-alertmanager)"
[[ -n "$AM_BIN" ]] || AM_BIN="$(find_bin "" alertmanager)"
AMTOOL_BIN="$(find_bin "${AMTOOL_BIN:-}" amtool)"

am_pid() {
  [[ -n "$AM_BIN" ]] || return 0
  owned_pid "$AM_PID_FILE" "$AM_BIN" "--config.file=$AM_CONFIG"
}

# The committed config with AM_WEBHOOK_URL applied, into the run dir.
am_render() {
  mkdir -p "$AM_RUN_DIR" "$AM_DATA_DIR"
  sed -e "s|$AM_DEFAULT_WEBHOOK_URL|$AM_WEBHOOK_URL|g" "$AM_DEPLOY_DIR/alertmanager.yml" \
    | write_atomic "$AM_CONFIG"
}
