# shellcheck shell=bash
# Shared settings and helpers for deploy/elasticsearch/*.sh. Sourced, never
# executed. Every setting is an environment variable with a default, so a test
# can run a second node on other ports with another run dir.
# shellcheck disable=SC2034  # the variables are used by the scripts that source this

ES_DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ES_REPO_ROOT="$(cd "$ES_DEPLOY_DIR/../.." && pwd)"

# The version comes from the pom so there is one place to bump it.
ES_VERSION="$(sed -n 's:.*<elasticsearch.version>\(.*\)</elasticsearch.version>.*:\1:p' "$ES_DEPLOY_DIR/pom.xml" | head -n1)"

ES_CACHE_DIR="${ES_CACHE_DIR:-$ES_REPO_ROOT/.cache/elasticsearch/$ES_VERSION}"
ES_HOME="$ES_CACHE_DIR/home"
ES_LAUNCHER_JAR="$ES_CACHE_DIR/launcher/textpulse-es-launcher.jar"
ES_FETCH_MARKER="$ES_CACHE_DIR/.fetched"

ES_HTTP_PORT="${ES_HTTP_PORT:-9200}"
ES_TRANSPORT_PORT="${ES_TRANSPORT_PORT:-9300}"
ES_CLUSTER_NAME="${ES_CLUSTER_NAME:-textpulse}"
# 1g heap: enough for tests and 100k small documents; leaves the rest of a
# 24 GB machine to Kafka, Triton and the services.
ES_HEAP="${ES_HEAP:-1g}"
ES_JAVA_OPTS="${ES_JAVA_OPTS:-}"
ES_START_TIMEOUT="${ES_START_TIMEOUT:-120}"
ES_STOP_TIMEOUT="${ES_STOP_TIMEOUT:-60}"

ES_RUN_DIR="$(realpath -m "${ES_RUN_DIR:-$ES_REPO_ROOT/.run/elasticsearch}")"
ES_CONFIG_DIR="$ES_RUN_DIR/config"
ES_DATA_DIR="$ES_RUN_DIR/data"
ES_LOGS_DIR="$ES_RUN_DIR/logs"
ES_TMP_DIR="$ES_RUN_DIR/tmp"
ES_PID_FILE="$ES_RUN_DIR/elasticsearch.pid"
ES_OUT_FILE="$ES_RUN_DIR/elasticsearch.out"
ES_LOG_FILE="$ES_LOGS_DIR/$ES_CLUSTER_NAME.log"
ES_URL="http://127.0.0.1:$ES_HTTP_PORT"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  ES_JAVA="$JAVA_HOME/bin/java"
  ES_JAVAC="$JAVA_HOME/bin/javac"
  ES_JAR="$JAVA_HOME/bin/jar"
else
  ES_JAVA="$(command -v java || true)"
  ES_JAVAC="$(command -v javac || true)"
  ES_JAR="$(command -v jar || true)"
fi

log() { printf '[elasticsearch] %s\n' "$*" >&2; }
die() { printf '[elasticsearch] ERROR: %s\n' "$*" >&2; exit 1; }

java_major() {
  "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1
}

require_java() {
  [[ -n "$ES_JAVA" ]] || die "java not found: install a JDK 17+ (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
  local major
  major="$(java_major "$ES_JAVA")"
  [[ -n "$major" && "$major" -ge 17 ]] || die "Elasticsearch $ES_VERSION needs Java 17+, found: $("$ES_JAVA" -version 2>&1 | head -n1)"
}

require_jdk() {
  require_java
  [[ -n "$ES_JAVAC" && -x "$ES_JAVAC" && -n "$ES_JAR" && -x "$ES_JAR" ]] \
    || die "javac/jar not found: the launcher is compiled at fetch time; install a JDK (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
}

# PID of the node this run dir belongs to, or nothing. A PID is trusted only if
# that process runs our launcher with this run dir's config, so a recycled PID
# is never signalled.
node_pid() {
  [[ -f "$ES_PID_FILE" ]] || return 0
  local pid
  pid="$(tr -dc '0-9' <"$ES_PID_FILE")"
  [[ -n "$pid" ]] || return 0
  if [[ -r "/proc/$pid/cmdline" ]] \
    && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "io.textpulse.es.NodeLauncher --home $ES_HOME --config $ES_CONFIG_DIR"; then
    echo "$pid"
  fi
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# GET a path on the node; prints the body; fails on a connection error or a
# non-2xx status. curl when present, else Python's urllib.
http_get() {
  local path="$1" max_time="${2:-5}"
  if command -v curl >/dev/null; then
    curl -fsS --max-time "$max_time" "$ES_URL$path"
  else
    python3 - "$ES_URL$path" "$max_time" <<'PY'
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
    sys.stdout.write(r.read().decode())
PY
  fi
}

# True when the cluster answers and is yellow or green (one node: replicas
# of user indices stay unassigned, so yellow is the ready state).
cluster_ready() {
  local body
  body="$(http_get "/_cluster/health?wait_for_status=yellow&timeout=${1:-1s}" 10 2>/dev/null)" || return 1
  [[ "$body" == *'"status":"green"'* || "$body" == *'"status":"yellow"'* ]]
}

cluster_status() {
  http_get "/_cluster/health" 5 2>/dev/null | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p'
}

log_tail() {
  local f
  for f in "$ES_OUT_FILE" "$ES_LOG_FILE"; do
    [[ -s "$f" ]] || continue
    printf '[elasticsearch] ---- last 40 lines of %s ----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
}
