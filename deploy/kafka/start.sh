#!/usr/bin/env bash
# Start the local single-node Kafka (KRaft broker+controller) in the
# background and wait until it answers client metadata requests.
#   fetches jars if needed, formats storage once, writes pid/log under
#   $KAFKA_RUN_DIR (default .run/kafka). Idempotent: a running, answering
#   broker is left alone. Exit status non-zero if it is not ready in time.
# Settings (env): KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_RUN_DIR
#   KAFKA_JMX_EXPORTER(=1) KAFKA_JMX_EXPORTER_PORT KAFKA_HEAP_OPTS
#   KAFKA_START_TIMEOUT — see deploy/kafka/README.md.
#   KAFKA_SECURITY=sasl_ssl: SASL/SCRAM over TLS on 9192 (run dir
#   .run/kafka-sasl), see sasl.sh and docs/security.md.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

started_at="$(date +%s.%N)"

pid="$(broker_pid)"
if [[ -n "$pid" ]]; then
  if wait_for_broker 0 2>/dev/null; then
    log "already running (pid $pid) and answering on 127.0.0.1:$KAFKA_PORT"
    exit 0
  fi
  log "pid $pid is running but not answering yet; waiting for it"
else
  rm -f "$KAFKA_PID_FILE"
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_open "$p" && die "port 127.0.0.1:$p is already in use by another process (not the broker of $KAFKA_RUN_DIR); stop it or set KAFKA_PORT/KAFKA_CONTROLLER_PORT"
  done
  if [[ "$KAFKA_JMX_EXPORTER" != 0 ]] && port_open "$KAFKA_JMX_EXPORTER_PORT"; then
    die "JMX exporter port 127.0.0.1:$KAFKA_JMX_EXPORTER_PORT is in use; set KAFKA_JMX_EXPORTER_PORT or KAFKA_JMX_EXPORTER=0"
  fi

  "$KAFKA_DEPLOY_DIR/fetch.sh"
  require_java
  mkdir -p "$KAFKA_RUN_DIR" "$KAFKA_DATA_DIR"

  # Render the config template for this run dir and these ports.
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
    -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@KAFKA_DATA_DIR@|$KAFKA_DATA_DIR|g" \
    "$KAFKA_DEPLOY_DIR/server.properties" >"$KAFKA_CONFIG_FILE"
  scram_args=()
  if [[ "$KAFKA_SECURITY" == sasl_ssl ]]; then
    # shellcheck source=sasl.sh source-path=SCRIPTDIR
    source "$KAFKA_DEPLOY_DIR/sasl.sh"
    sasl_prepare
    mapfile -t scram_args < <(sasl_format_args)
    log "SASL_SSL listener (SCRAM-SHA-512 over TLS); client settings in $KAFKA_CLIENT_ENV_FILE"
  fi

  # Format the log dir once; the cluster id lives next to it in the run dir.
  if [[ ! -f "$KAFKA_DATA_DIR/meta.properties" ]]; then
    if [[ ! -s "$KAFKA_CLUSTER_ID_FILE" ]]; then
      "$KAFKA_JAVA" -cp "$KAFKA_JARS_DIR/*" \
        -Dlog4j2.configurationFile="$KAFKA_DEPLOY_DIR/log4j2-tools.xml" \
        kafka.tools.StorageTool random-uuid >"$KAFKA_CLUSTER_ID_FILE"
    fi
    cluster_id="$(tr -d '[:space:]' <"$KAFKA_CLUSTER_ID_FILE")"
    log "formatting $KAFKA_DATA_DIR (cluster id $cluster_id)"
    "$KAFKA_JAVA" -cp "$KAFKA_JARS_DIR/*" \
      -Dlog4j2.configurationFile="$KAFKA_DEPLOY_DIR/log4j2-tools.xml" \
      kafka.tools.StorageTool format --standalone --ignore-formatted \
      --cluster-id "$cluster_id" --config "$KAFKA_CONFIG_FILE" "${scram_args[@]}" >"$KAFKA_RUN_DIR/format.log" 2>&1 \
      || { cat "$KAFKA_RUN_DIR/format.log" >&2; die "formatting $KAFKA_DATA_DIR failed"; }
    # The format output lists the SCRAM users' salted keys.
    [[ "$KAFKA_SECURITY" == plaintext ]] || chmod 600 "$KAFKA_RUN_DIR/format.log"
  fi

  read -r -a heap_opts <<<"$KAFKA_HEAP_OPTS"
  jvm_opts=(
    "${heap_opts[@]}"
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    -Dkafka.logs.dir="$KAFKA_RUN_DIR"
    -Dlog4j2.configurationFile="$KAFKA_DEPLOY_DIR/log4j2.xml"
  )
  if [[ "$KAFKA_JMX_EXPORTER" != 0 ]]; then
    jvm_opts+=("-javaagent:$KAFKA_AGENT_JAR=127.0.0.1:$KAFKA_JMX_EXPORTER_PORT:$KAFKA_DEPLOY_DIR/jmx-exporter.yaml")
  fi

  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT$([[ "$KAFKA_JMX_EXPORTER" != 0 ]] && echo ", metrics :$KAFKA_JMX_EXPORTER_PORT"))"
  # shellcheck disable=SC2034  # read by log_tail in lib.sh
  KAFKA_LOG_OFFSET="$(stat -c %s "$KAFKA_LOG_FILE" 2>/dev/null || echo 0)"
  # setsid: its own session, so the broker outlives this shell and a Ctrl-C
  # in the caller's terminal does not reach it.
  setsid nohup "$KAFKA_JAVA" "${jvm_opts[@]}" -cp "$KAFKA_JARS_DIR/*" \
    kafka.Kafka "$KAFKA_CONFIG_FILE" >"$KAFKA_OUT_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$KAFKA_PID_FILE"
fi

rc=0
wait_for_broker "$KAFKA_START_TIMEOUT" "$pid" || rc=$?
if ((rc == 3)); then
  log_tail
  rm -f "$KAFKA_PID_FILE"
  die "broker process $pid exited during start-up (logs: $KAFKA_LOG_FILE, $KAFKA_OUT_FILE)"
elif ((rc != 0)); then
  log_tail
  die "broker (pid $pid) not answering on 127.0.0.1:$KAFKA_PORT after ${KAFKA_START_TIMEOUT}s; it is still running: deploy/kafka/stop.sh to stop it"
fi

elapsed="$(awk -v a="$started_at" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')"
log "ready: pid $pid, bootstrap 127.0.0.1:$KAFKA_PORT, up in ${elapsed}s (log $KAFKA_LOG_FILE)"
