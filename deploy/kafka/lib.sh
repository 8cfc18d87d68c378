# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared settings and helpers for deploy/kafka/*.sh. Sourced, never executed.
# Every setting is an environment variable with a default, so a test can run
# a second broker on other ports and another run dir next to the usual one.

KAFKA_DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_REPO_ROOT="$(cd "$KAFKA_DEPLOY_DIR/../.." && pwd)"

# Version comes from the pom so there is one place to bump it.
_pom_version() {
  sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$KAFKA_DEPLOY_DIR/pom.xml" | head -n1
}
KAFKA_VERSION="$(_pom_version kafka.version)"
KAFKA_JMX_EXPORTER_VERSION="$(_pom_version jmx.exporter.version)"

KAFKA_CACHE_DIR="${KAFKA_CACHE_DIR:-$KAFKA_REPO_ROOT/.cache/kafka/$KAFKA_VERSION}"
KAFKA_JARS_DIR="$KAFKA_CACHE_DIR/jars"
KAFKA_AGENT_JAR="$KAFKA_CACHE_DIR/agent/jmx_prometheus_javaagent.jar"
KAFKA_FETCH_MARKER="$KAFKA_CACHE_DIR/.fetched"

# KAFKA_SECURITY=sasl_ssl: the secured broker (SASL/SCRAM over TLS, see
# sasl.sh and docs/security.md) with its own default ports and run dir, so it
# runs next to the plaintext one. The default, plaintext, changes nothing.
KAFKA_SECURITY="${KAFKA_SECURITY:-plaintext}"
case "$KAFKA_SECURITY" in
  plaintext) ;;
  sasl_ssl)
    KAFKA_PORT="${KAFKA_PORT:-9192}"
    KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9193}"
    KAFKA_JMX_EXPORTER_PORT="${KAFKA_JMX_EXPORTER_PORT:-9594}"
    KAFKA_RUN_DIR="${KAFKA_RUN_DIR:-$KAFKA_REPO_ROOT/.run/kafka-sasl}"
    ;;
  *)
    printf '[kafka] ERROR: KAFKA_SECURITY must be plaintext or sasl_ssl, not %s\n' "$KAFKA_SECURITY" >&2
    exit 1
    ;;
esac

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9095}"
KAFKA_JMX_EXPORTER="${KAFKA_JMX_EXPORTER:-1}"
KAFKA_JMX_EXPORTER_PORT="${KAFKA_JMX_EXPORTER_PORT:-9404}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-60}"

KAFKA_RUN_DIR="$(realpath -m "${KAFKA_RUN_DIR:-$KAFKA_REPO_ROOT/.run/kafka}")"
KAFKA_DATA_DIR="$KAFKA_RUN_DIR/data"
KAFKA_PID_FILE="$KAFKA_RUN_DIR/kafka.pid"
KAFKA_LOG_FILE="$KAFKA_RUN_DIR/kafka.log"
KAFKA_OUT_FILE="$KAFKA_RUN_DIR/kafka.out"
KAFKA_CONFIG_FILE="$KAFKA_RUN_DIR/server.properties"
KAFKA_CLUSTER_ID_FILE="$KAFKA_RUN_DIR/cluster.id"
# SASL_SSL mode only: TLS material, SCRAM credentials, client settings.
KAFKA_TLS_DIR="$(realpath -m "${KAFKA_TLS_DIR:-$KAFKA_RUN_DIR/tls}")"
KAFKA_CREDENTIALS_FILE="$KAFKA_RUN_DIR/credentials.env"
KAFKA_CLIENT_ENV_FILE="$KAFKA_RUN_DIR/client.env"
KAFKA_CLIENT_PROPERTIES="$KAFKA_RUN_DIR/client.properties"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  KAFKA_JAVA="$JAVA_HOME/bin/java"
else
  KAFKA_JAVA="$(command -v java || true)"
fi

# Python used for the readiness probe (aiokafka); Kafka's own CLI is the
# fallback when no interpreter with aiokafka is around.
if [[ -z "${KAFKA_PYTHON:-}" ]]; then
  if [[ -x "$KAFKA_REPO_ROOT/.venv/bin/python" ]]; then
    KAFKA_PYTHON="$KAFKA_REPO_ROOT/.venv/bin/python"
  else
    KAFKA_PYTHON="$(command -v python3 || true)"
  fi
fi

log() { printf '[kafka] %s\n' "$*" >&2; }
die() { printf '[kafka] ERROR: %s\n' "$*" >&2; exit 1; }

require_java() {
  [[ -n "$KAFKA_JAVA" ]] || die "java not found: install a JDK 17+ (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
  local major
  major="$("$KAFKA_JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
  [[ -n "$major" && "$major" -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17+, found: $("$KAFKA_JAVA" -version 2>&1 | head -n1)"
}

# PID of the broker this run dir belongs to, or nothing. A PID is trusted only
# if that process is a JVM running kafka.Kafka with this run dir's config, so
# a recycled PID is never signalled.
broker_pid() {
  [[ -f "$KAFKA_PID_FILE" ]] || return 0
  local pid
  pid="$(tr -dc '0-9' <"$KAFKA_PID_FILE")"
  [[ -n "$pid" ]] || return 0
  if [[ -r "/proc/$pid/cmdline" ]] \
    && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $KAFKA_CONFIG_FILE"; then
    echo "$pid"
  fi
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Wait up to $1 seconds (0: one attempt) until the broker answers a client
# metadata request, not merely accepts connections; with $2, give up as soon
# as that PID exits. Returns 0 ready, 1 not ready in time, 3 process gone.
wait_for_broker() {
  local wait_s="$1" pid="${2:-}" bootstrap="127.0.0.1:$KAFKA_PORT"
  if [[ -n "$KAFKA_PYTHON" ]] && "$KAFKA_PYTHON" -c 'import aiokafka' 2>/dev/null; then
    local security=()
    [[ "$KAFKA_SECURITY" == plaintext ]] || security=(--env-file "$KAFKA_CLIENT_ENV_FILE")
    "$KAFKA_PYTHON" "$KAFKA_DEPLOY_DIR/kafka_ready.py" "$bootstrap" --wait "$wait_s" ${pid:+--pid "$pid"} "${security[@]}"
    return
  fi
  # No Python with aiokafka: Kafka's own CLI (one JVM per attempt).
  local deadline=$(($(date +%s) + ${wait_s%.*}))
  local command_config=()
  [[ "$KAFKA_SECURITY" == plaintext ]] || command_config=(--command-config "$KAFKA_CLIENT_PROPERTIES")
  while :; do
    [[ -z "$pid" ]] || kill -0 "$pid" 2>/dev/null || return 3
    if port_open "$KAFKA_PORT" && timeout 30 "$KAFKA_JAVA" -Xmx128m -cp "$KAFKA_JARS_DIR/*" \
      -Dlog4j2.configurationFile="$KAFKA_DEPLOY_DIR/log4j2-tools.xml" \
      org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$bootstrap" "${command_config[@]}" >/dev/null 2>&1; then
      return 0
    fi
    (($(date +%s) < deadline)) || return 1
    sleep 1
  done
}

# Print the end of the broker's output and log. Only the part of kafka.log
# written since byte KAFKA_LOG_OFFSET (set by start.sh before launching), so
# an earlier run's lines are not mistaken for this run's failure.
KAFKA_LOG_OFFSET=0
log_tail() {
  if [[ -s "$KAFKA_OUT_FILE" ]]; then
    printf '[kafka] ---- last 40 lines of %s ----\n' "$KAFKA_OUT_FILE" >&2
    tail -n 40 "$KAFKA_OUT_FILE" >&2
  fi
  local recent=""
  [[ -s "$KAFKA_LOG_FILE" ]] && recent="$(tail -c +"$((KAFKA_LOG_OFFSET + 1))" "$KAFKA_LOG_FILE" | tail -n 40)"
  if [[ -n "$recent" ]]; then
    printf '[kafka] ---- last 40 lines of %s (this start) ----\n%s\n' "$KAFKA_LOG_FILE" "$recent" >&2
  fi
}
