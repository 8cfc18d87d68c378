#!/usr/bin/env bash
# Assemble an Elasticsearch home from Maven Central into
# .cache/elasticsearch/<version>/:
#   home/lib/                          the server and its libraries (module path)
#   home/modules/transport-netty4/     the stock HTTP/transport module
#   home/modules/textpulse-root-info/  GET|HEAD / (rest-root is not published)
#   home/plugins/                      empty
#   launcher/textpulse-es-launcher.jar starts a node from that home
# Idempotent: a marker holding the checksum of the pom and the Java sources
# says the copy is complete and current; a change to either rebuilds it.
# Needs a JDK 17+ (javac, jar) and mvn.
set -euo pipefail
# shellcheck source=deploy/elasticsearch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pom="$ES_DEPLOY_DIR/pom.xml"
want="$(cat "$pom" "$0" \
  "$ES_DEPLOY_DIR/launcher/src/main/java/io/textpulse/es/NodeLauncher.java" \
  "$ES_DEPLOY_DIR/root-info/src/main/java/io/textpulse/es/rootinfo/RootInfoPlugin.java" \
  | sha256sum | cut -d' ' -f1)"

if [[ -f "$ES_FETCH_MARKER" && "$(cat "$ES_FETCH_MARKER")" == "$want" \
  && -f "$ES_HOME/lib/elasticsearch-$ES_VERSION.jar" && -f "$ES_LAUNCHER_JAR" ]]; then
  log "Elasticsearch $ES_VERSION already fetched in $ES_CACHE_DIR"
  exit 0
fi

command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven)"
require_jdk

log "fetching Elasticsearch $ES_VERSION into $ES_CACHE_DIR"
mkdir -p "$ES_CACHE_DIR"
staging="$(mktemp -d "$ES_CACHE_DIR/.staging.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

# Maven's output is kept for failures only (even -q prints terminal resets).
if ! mvn -q -B -ntp -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
  -DoutputDirectory="$staging/jars" -DincludeScope=runtime >"$staging/mvn.log" 2>&1; then
  sed 's/\x1b\[[0-9;]*m//g' "$staging/mvn.log" >&2
  die "mvn could not resolve deploy/elasticsearch/pom.xml (is Maven Central reachable?)"
fi
for j in "elasticsearch-$ES_VERSION.jar" "transport-netty4-$ES_VERSION.jar"; do
  [[ -f "$staging/jars/$j" ]] || die "mvn did not deliver $j"
done

home="$staging/home"
netty_mod="$home/modules/transport-netty4"
root_mod="$home/modules/textpulse-root-info"
mkdir -p "$home/lib" "$netty_mod" "$root_mod" "$home/plugins" "$staging/launcher"

# Same split as the stock distribution: Netty belongs to the transport-netty4
# module's own layer, everything else is the server's module path.
for jar in "$staging/jars"/*.jar; do
  case "$(basename "$jar")" in
    netty-* | "transport-netty4-$ES_VERSION.jar") mv "$jar" "$netty_mod/" ;;
    *) mv "$jar" "$home/lib/" ;;
  esac
done
# The module's descriptor ships inside its jar; the plugin loader wants it
# beside the jars, as in the distribution's modules/ directory.
(cd "$staging" && "$ES_JAR" xf "$netty_mod/transport-netty4-$ES_VERSION.jar" \
  META-INF/es-plugins/transport-netty4/plugin-descriptor.properties)
mv "$staging/META-INF/es-plugins/transport-netty4/plugin-descriptor.properties" "$netty_mod/"
grep -q '^classname=org.elasticsearch.transport.netty4.Netty4Plugin' "$netty_mod/plugin-descriptor.properties" \
  || die "transport-netty4 plugin descriptor not as expected"

# Our two classes, compiled against exactly these jars.
log "compiling the launcher and the root-info module (javac --release 17)"
"$ES_JAVAC" -nowarn --release 17 -encoding UTF-8 -cp "$home/lib/*" -d "$staging/classes-launcher" \
  "$ES_DEPLOY_DIR/launcher/src/main/java/io/textpulse/es/NodeLauncher.java"
"$ES_JAR" cf "$staging/launcher/textpulse-es-launcher.jar" -C "$staging/classes-launcher" .
"$ES_JAVAC" -nowarn --release 17 -encoding UTF-8 -cp "$home/lib/*" -d "$staging/classes-root" \
  "$ES_DEPLOY_DIR/root-info/src/main/java/io/textpulse/es/rootinfo/RootInfoPlugin.java"
"$ES_JAR" cf "$root_mod/textpulse-root-info.jar" -C "$staging/classes-root" .
cat >"$root_mod/plugin-descriptor.properties" <<PROPS
description=GET and HEAD / (root info), standing in for the rest-root module that is not on Maven Central
version=$ES_VERSION
name=textpulse-root-info
classname=io.textpulse.es.rootinfo.RootInfoPlugin
java.version=17
elasticsearch.version=$ES_VERSION
PROPS

rm -rf "$ES_HOME" "$ES_CACHE_DIR/launcher"
mv "$home" "$ES_HOME"
mv "$staging/launcher" "$ES_CACHE_DIR/launcher"
echo "$want" >"$ES_FETCH_MARKER"
log "fetched $(find "$ES_HOME" -name '*.jar' | wc -l) jars ($(du -sh "$ES_CACHE_DIR" | cut -f1))"
