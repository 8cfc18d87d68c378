#!/usr/bin/env bash
# Download Apache Kafka (broker, tools, logging) and the Prometheus JMX
# exporter agent from Maven Central into .cache/kafka/<version>/:
#   jars/   the broker classpath
#   agent/  jmx_prometheus_javaagent.jar (kept off the classpath)
# Idempotent: a marker holding the pom's checksum says the copy is complete
# and current; a changed pom.xml triggers a fresh copy. Needs only Java + mvn.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pom="$KAFKA_DEPLOY_DIR/pom.xml"
want="$(sha256sum "$pom" | cut -d' ' -f1)"

if [[ -f "$KAFKA_FETCH_MARKER" && "$(cat "$KAFKA_FETCH_MARKER")" == "$want" \
  && -f "$KAFKA_JARS_DIR/kafka_2.13-$KAFKA_VERSION.jar" && -f "$KAFKA_AGENT_JAR" ]]; then
  log "Kafka $KAFKA_VERSION already fetched in $KAFKA_CACHE_DIR"
  exit 0
fi

command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven)"
require_java

log "fetching Kafka $KAFKA_VERSION + JMX exporter $KAFKA_JMX_EXPORTER_VERSION into $KAFKA_CACHE_DIR"
mkdir -p "$KAFKA_CACHE_DIR"
staging="$(mktemp -d "$KAFKA_CACHE_DIR/.staging.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

# Maven's output is kept for failures only (even -q prints terminal resets).
# KAFKA_MVN_ARGS: extra Maven flags, e.g. -Dmaven.repo.local=/tmp/m2 or -o.
# shellcheck disable=SC2086  # a list of flags
if ! mvn -q -B -ntp -Dstyle.color=never ${KAFKA_MVN_ARGS:-} -f "$pom" dependency:copy-dependencies \
  -DoutputDirectory="$staging/jars" -DincludeScope=runtime >"$staging/mvn.log" 2>&1; then
  sed 's/\x1b\[[0-9;]*m//g' "$staging/mvn.log" >&2
  die "mvn could not resolve deploy/kafka/pom.xml (is Maven Central reachable?)"
fi

agent_src="$staging/jars/jmx_prometheus_javaagent-$KAFKA_JMX_EXPORTER_VERSION.jar"
[[ -f "$agent_src" ]] || die "mvn did not deliver $(basename "$agent_src")"
[[ -f "$staging/jars/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "mvn did not deliver kafka_2.13-$KAFKA_VERSION.jar"
mkdir -p "$staging/agent"
# The agent bundles its own Prometheus client: on the broker classpath too it
# would be loaded twice, so it lives apart and is only passed as -javaagent.
mv "$agent_src" "$staging/agent/jmx_prometheus_javaagent.jar"

rm -rf "$KAFKA_JARS_DIR" "$KAFKA_CACHE_DIR/agent"
mv "$staging/jars" "$KAFKA_JARS_DIR"
mv "$staging/agent" "$KAFKA_CACHE_DIR/agent"
echo "$want" >"$KAFKA_FETCH_MARKER"
log "fetched $(find "$KAFKA_JARS_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$KAFKA_CACHE_DIR" | cut -f1))"
