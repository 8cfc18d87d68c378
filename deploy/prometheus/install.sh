#!/usr/bin/env bash
# Install Prometheus, promtool and Alertmanager from Debian's packages
# (`prometheus`, `prometheus-alertmanager`). Idempotent: does nothing when the
# binaries are already on PATH.
#
# apt-get needs root: as root it runs directly, otherwise through sudo, and
# it says so before it starts. SKIP_APT=1 installs nothing and prints the
# command to run (`make up` then starts without Prometheus and Alertmanager).
#
# The packages ship system services (/etc/init.d, systemd units) that would
# listen on 9090/9093 with the package's own config. We run our own instances
# (deploy/prometheus/start.sh, deploy/alertmanager/start.sh), so any service
# the package started is stopped again here, by the PID file it wrote, and
# disabled where systemd is present.
set -euo pipefail

log() { printf '[prom-install] %s\n' "$*" >&2; }
die() { printf '[prom-install] ERROR: %s\n' "$*" >&2; exit 1; }

have_all() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null \
    && command -v prometheus-alertmanager >/dev/null
}

# Stop a packaged daemon that the install may have started: only the PID in
# its PID file, and only if that process really is the named binary.
stop_packaged() {
  local name="$1" binary="$2" pidfile="$3" pid
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now "$name" >/dev/null 2>&1 || true
  fi
  [[ -f "$pidfile" ]] || return 0
  pid="$(tr -dc '0-9' <"$pidfile")"
  if [[ -n "$pid" && "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$binary" ]]; then
    log "stopping the packaged $name service (pid $pid) — we run our own instance"
    kill -TERM "$pid"
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
}

if have_all; then
  log "already installed: $(prometheus --version 2>&1 | head -n1); $(prometheus-alertmanager --version 2>&1 | head -n1)"
  exit 0
fi

apt_cmd="apt-get install --no-install-recommends prometheus prometheus-alertmanager"
if [[ "${SKIP_APT:-0}" == 1 ]]; then
  log "SKIP_APT=1: not installing Prometheus/Alertmanager; to install them, run as root: $apt_cmd"
  exit 0
fi
command -v apt-get >/dev/null || die "apt-get not found: install the Debian packages prometheus and prometheus-alertmanager another way, or put prometheus, promtool and prometheus-alertmanager on PATH"
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null \
    || die "installing Debian's prometheus and prometheus-alertmanager needs root and sudo is absent: run as root \`$apt_cmd\`, or skip them with SKIP_APT=1"
  sudo=(sudo)
  log "needs root: running \`sudo $apt_cmd\` (sudo may ask for your password; SKIP_APT=1 skips this)"
else
  log "running as root: $apt_cmd (SKIP_APT=1 skips this)"
fi

export DEBIAN_FRONTEND=noninteractive
# Other installs may hold the dpkg lock; wait for it rather than failing.
apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
log "apt-get update"
"${sudo[@]}" apt-get "${apt_opts[@]}" update -qq
log "apt-get install prometheus prometheus-alertmanager"
"${sudo[@]}" apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
  prometheus prometheus-alertmanager >&2

stop_packaged prometheus /usr/bin/prometheus /run/prometheus/prometheus.pid
stop_packaged prometheus-alertmanager /usr/bin/prometheus-alertmanager /run/prometheus/prometheus-alertmanager.pid

have_all || die "install finished but prometheus/promtool/prometheus-alertmanager are not on PATH"
log "installed: $(prometheus --version 2>&1 | head -n1); $(prometheus-alertmanager --version 2>&1 | head -n1)"
