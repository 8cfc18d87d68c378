#!/usr/bin/env bash
# Start the local single-node Elasticsearch in the background and wait until
# the cluster is yellow or green.
#   fetches jars if needed, renders config into $ES_RUN_DIR/config, keeps
#   data/logs/pid under $ES_RUN_DIR (default .run/elasticsearch). Idempotent:
#   a running, healthy node is left alone. Non-zero exit if not ready in time.
# Settings (env): ES_HTTP_PORT(9200) ES_TRANSPORT_PORT(9300) ES_RUN_DIR
#   ES_HEAP(1g) ES_JAVA_OPTS ES_CLUSTER_NAME ES_START_TIMEOUT(120) — see
#   deploy/elasticsearch/README.md.
set -euo pipefail
# shellcheck source=deploy/elasticsearch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

started_at="$(date +%s.%N)"

pid="$(node_pid)"
if [[ -n "$pid" ]]; then
  if cluster_ready; then
    log "already running (pid $pid) and $(cluster_status) on $ES_URL"
    exit 0
  fi
  log "pid $pid is running but the cluster is not ready yet; waiting for it"
else
  rm -f "$ES_PID_FILE"
  for p in "$ES_HTTP_PORT" "$ES_TRANSPORT_PORT"; do
    port_open "$p" && die "port 127.0.0.1:$p is already in use by another process (not the node of $ES_RUN_DIR); stop it or set ES_HTTP_PORT/ES_TRANSPORT_PORT"
  done

  "$ES_DEPLOY_DIR/fetch.sh"
  require_java
  mkdir -p "$ES_CONFIG_DIR" "$ES_DATA_DIR" "$ES_LOGS_DIR" "$ES_TMP_DIR"

  sed -e "s|@ES_CLUSTER_NAME@|$ES_CLUSTER_NAME|g" \
    -e "s|@ES_HTTP_PORT@|$ES_HTTP_PORT|g" \
    -e "s|@ES_TRANSPORT_PORT@|$ES_TRANSPORT_PORT|g" \
    -e "s|@ES_DATA_DIR@|$ES_DATA_DIR|g" \
    -e "s|@ES_LOGS_DIR@|$ES_LOGS_DIR|g" \
    "$ES_DEPLOY_DIR/config/elasticsearch.yml" >"$ES_CONFIG_DIR/elasticsearch.yml"
  cp "$ES_DEPLOY_DIR/config/log4j2.properties" "$ES_CONFIG_DIR/log4j2.properties"

  # The stock distribution's system JVM options (server-cli SystemJvmOptions
  # and config/jvm.options), minus the entitlement agent, which is not
  # published on Maven Central.
  jvm_opts=(
    "-Xms$ES_HEAP" "-Xmx$ES_HEAP"
    -XX:+UseG1GC -XX:+AlwaysPreTouch -Xss1m -XX:-OmitStackTraceInFastThrow
    -XX:+ExitOnOutOfMemoryError
    "-Xlog:gc*,gc+age=trace,safepoint:file=$ES_LOGS_DIR/gc.log:utctime,level,pid,tags:filecount=4,filesize=16m"
    "-XX:ErrorFile=$ES_LOGS_DIR/hs_err_pid%p.log"
    "-Djava.io.tmpdir=$ES_TMP_DIR"
    -Des.networkaddress.cache.ttl=60 -Des.networkaddress.cache.negative.ttl=10
    -Djava.awt.headless=true -Dfile.encoding=UTF-8 -Djna.nosys=true
    -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true -Dlog4j2.formatMsgNoLookups=true
    -Djava.locale.providers=CLDR -Des.distribution.type=tar
  )
  if (("$(java_major "$ES_JAVA")" >= 21)); then
    jvm_opts+=("--enable-native-access=org.elasticsearch.nativeaccess,org.apache.lucene.core")
  fi
  # shellcheck disable=SC2206  # ES_JAVA_OPTS is a list of flags
  jvm_opts+=($ES_JAVA_OPTS)

  log "starting Elasticsearch $ES_VERSION on $ES_URL (transport :$ES_TRANSPORT_PORT, heap $ES_HEAP)"
  # setsid: its own session, so the node outlives this shell and a Ctrl-C in
  # the caller's terminal does not reach it. The server is on the module path
  # (as in the distribution); the launcher sits on the class path.
  setsid nohup "$ES_JAVA" "${jvm_opts[@]}" \
    --module-path "$ES_HOME/lib" --add-modules ALL-MODULE-PATH \
    -cp "$ES_LAUNCHER_JAR" \
    io.textpulse.es.NodeLauncher --home "$ES_HOME" --config "$ES_CONFIG_DIR" \
    >"$ES_OUT_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$ES_PID_FILE"
fi

deadline=$(($(date +%s) + ES_START_TIMEOUT))
while :; do
  if ! kill -0 "$pid" 2>/dev/null; then
    log_tail
    rm -f "$ES_PID_FILE"
    die "node process $pid exited during start-up (logs: $ES_LOG_FILE, $ES_OUT_FILE)"
  fi
  if port_open "$ES_HTTP_PORT" && cluster_ready 2s; then
    break
  fi
  if (($(date +%s) >= deadline)); then
    log_tail
    die "node (pid $pid) not ready on $ES_URL after ${ES_START_TIMEOUT}s; it is still running: deploy/elasticsearch/stop.sh to stop it"
  fi
  sleep 0.5
done

elapsed="$(awk -v a="$started_at" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')"
log "ready: pid $pid, $ES_URL, cluster $(cluster_status), up in ${elapsed}s (log $ES_LOG_FILE)"
