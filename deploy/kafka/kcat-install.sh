#!/usr/bin/env bash
# Install kcat (Debian package `kcat`, the librdkafka command-line client),
# the outside Kafka client the edge tests produce bad records with. Idempotent:
# does nothing when kcat is on PATH. Like deploy/prometheus/install.sh:
# apt-get as root, else through sudo (said before it runs); SKIP_APT=1 only
# prints the command.
set -euo pipefail

log() { printf '[kcat-install] %s\n' "$*" >&2; }
die() { printf '[kcat-install] ERROR: %s\n' "$*" >&2; exit 1; }

if command -v kcat >/dev/null; then
  log "already installed: $(kcat -V 2>&1 | head -n1)"
  exit 0
fi
apt_cmd="apt-get install --no-install-recommends kcat"
[[ "${SKIP_APT:-0}" == 1 ]] && { log "SKIP_APT=1: not installing kcat; run as root: $apt_cmd"; exit 0; }
command -v apt-get >/dev/null || die "apt-get not found: install kcat (https://github.com/edenhill/kcat) and put it on PATH"
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null || die "installing kcat needs root and sudo is absent: run as root \`$apt_cmd\`"
  sudo=(sudo)
  log "needs root: running \`sudo $apt_cmd\`"
fi
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
log "apt-get update"
"${sudo[@]}" apt-get "${apt_opts[@]}" update -qq
log "$apt_cmd"
"${sudo[@]}" apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends kcat >&2
command -v kcat >/dev/null || die "install finished but kcat is not on PATH"
log "installed: $(kcat -V 2>&1 | head -n1)"
