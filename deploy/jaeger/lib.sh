# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Settings of the local Jaeger (sourced by start/stop/status.sh). Every setting is
# an environment variable with a default, so a test can run a second instance on
# other ports and another run dir. Every listener binds 127.0.0.1.
#
#   JAEGER_VERSION          Go module version built by build.sh (v1.75.0 = Jaeger v2.12.0)
#   JAEGER_BIN              binary (.cache/jaeger/$JAEGER_VERSION/jaeger, from build.sh)
#   JAEGER_OTLP_HTTP_PORT   OTLP/HTTP receiver (4318): what the services export to
#   JAEGER_OTLP_GRPC_PORT   OTLP/gRPC receiver (4317)
#   JAEGER_QUERY_PORT       query API and UI (16686): /api/services, /api/traces, /search
#   JAEGER_QUERY_GRPC_PORT  query gRPC API (16685)
#   JAEGER_HEALTH_PORT      health check (13133)
#   JAEGER_METRICS_PORT     Jaeger's own Prometheus metrics (8888)
#   JAEGER_MAX_TRACES       traces kept in memory, oldest evicted first (100000)
#   JAEGER_RUN_DIR          pid, log (.run/jaeger)
#   JAEGER_START_TIMEOUT / JAEGER_STOP_TIMEOUT   seconds (60 / 20)

OBS_COMPONENT=jaeger
# shellcheck source=deploy/prometheus/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../prometheus/common.sh"

JAEGER_DEPLOY_DIR="$OBS_REPO_ROOT/deploy/jaeger"
JAEGER_VERSION="${JAEGER_VERSION:-v1.75.0}"
export JAEGER_OTLP_HTTP_PORT="${JAEGER_OTLP_HTTP_PORT:-4318}"
export JAEGER_OTLP_GRPC_PORT="${JAEGER_OTLP_GRPC_PORT:-4317}"
export JAEGER_QUERY_PORT="${JAEGER_QUERY_PORT:-16686}"
export JAEGER_QUERY_GRPC_PORT="${JAEGER_QUERY_GRPC_PORT:-16685}"
export JAEGER_HEALTH_PORT="${JAEGER_HEALTH_PORT:-13133}"
export JAEGER_METRICS_PORT="${JAEGER_METRICS_PORT:-8888}"
export JAEGER_MAX_TRACES="${JAEGER_MAX_TRACES:-100000}"
JAEGER_RUN_DIR="$(realpath -m "${JAEGER_RUN_DIR:-$OBS_REPO_ROOT/.run/jaeger}")"
JAEGER_START_TIMEOUT="${JAEGER_START_TIMEOUT:-60}"
JAEGER_STOP_TIMEOUT="${JAEGER_STOP_TIMEOUT:-20}"

# The committed config is copied into the run dir: its path on the command line tells our process apart.
JAEGER_CONFIG="$JAEGER_RUN_DIR/jaeger.yaml"
JAEGER_PID_FILE="$JAEGER_RUN_DIR/jaeger.pid"
JAEGER_LOG_FILE="$JAEGER_RUN_DIR/jaeger.log"
JAEGER_URL="http://127.0.0.1:$JAEGER_QUERY_PORT"
JAEGER_OTLP_URL="http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT"
JAEGER_BIN="$(find_bin "${JAEGER_BIN:-$OBS_REPO_ROOT/.cache/jaeger/$JAEGER_VERSION/jaeger}" jaeger)"

for _port in "$JAEGER_OTLP_HTTP_PORT" "$JAEGER_OTLP_GRPC_PORT" "$JAEGER_QUERY_PORT" "$JAEGER_QUERY_GRPC_PORT" \
  "$JAEGER_HEALTH_PORT" "$JAEGER_METRICS_PORT"; do
  [[ "$_port" =~ ^[0-9]+$ ]] || die "JAEGER_*_PORT must be a number (got: '$_port')"
done

# A PID is ours only if that process runs our binary with this run dir's config (two
# instances with other run dirs never stop each other; a recycled PID is never trusted).
jaeger_pid() {
  [[ -n "$JAEGER_BIN" ]] || return 0
  owned_pid "$JAEGER_PID_FILE" "$JAEGER_BIN" "--config=$JAEGER_CONFIG"
}
