#!/usr/bin/env bash
# Run one of Kafka's command-line tools from the fetched jars, the way the
# bin/kafka-*.sh scripts of a release would, against the local broker.
#   cli.sh topics --list
#   cli.sh topics --create --topic t --partitions 3
#   cli.sh consumer-groups --describe --all-groups
#   cli.sh console-consumer --topic t --from-beginning --max-messages 10
# --bootstrap-server 127.0.0.1:$KAFKA_PORT is added unless given; with
# KAFKA_SECURITY=sasl_ssl so is --command-config (admin credentials).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

declare -A tools=(
  [topics]=org.apache.kafka.tools.TopicCommand
  [consumer-groups]=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
  [configs]=org.apache.kafka.tools.ConfigCommand
  [metadata-quorum]=org.apache.kafka.tools.MetadataQuorumCommand
  [transactions]=org.apache.kafka.tools.TransactionsCommand
  [get-offsets]=org.apache.kafka.tools.GetOffsetShell
  [console-producer]=org.apache.kafka.tools.ConsoleProducer
  [console-consumer]=org.apache.kafka.tools.consumer.ConsoleConsumer
  [api-versions]=org.apache.kafka.tools.BrokerApiVersionsCommand
)

tool="${1:-}"
if [[ -z "$tool" || -z "${tools[$tool]:-}" ]]; then
  die "usage: cli.sh TOOL [ARGS...]; TOOL is one of: $(printf '%s\n' "${!tools[@]}" | sort | tr '\n' ' ')"
fi
shift

[[ -f "$KAFKA_FETCH_MARKER" ]] || "$KAFKA_DEPLOY_DIR/fetch.sh"
require_java

args=("$@")
if [[ " ${args[*]} " != *" --bootstrap-server "* && " ${args[*]} " != *" --bootstrap-controller "* ]]; then
  args=(--bootstrap-server "127.0.0.1:$KAFKA_PORT" "${args[@]}")
fi
# SASL_SSL broker (KAFKA_SECURITY=sasl_ssl): the admin tools log in as the admin user.
if [[ "$KAFKA_SECURITY" != plaintext && " ${args[*]} " != *" --command-config "* ]]; then
  case "$tool" in
    topics | consumer-groups | configs | metadata-quorum | transactions | get-offsets | api-versions)
      args+=(--command-config "$KAFKA_CLIENT_PROPERTIES")
      ;;
  esac
fi
exec "$KAFKA_JAVA" -Xmx256m -cp "$KAFKA_JARS_DIR/*" \
  -Dlog4j2.configurationFile="$KAFKA_DEPLOY_DIR/log4j2-tools.xml" \
  "${tools[$tool]}" "${args[@]}"
