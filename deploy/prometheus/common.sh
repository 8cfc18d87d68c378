# shellcheck shell=bash
# Helpers shared by deploy/prometheus/*.sh and deploy/alertmanager/*.sh.
# Sourced, never executed. The caller sets OBS_COMPONENT (log prefix) first.
# shellcheck disable=SC2034  # OBS_REPO_ROOT is used by the sourcing lib.sh files

OBS_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

log() { printf '[%s] %s\n' "${OBS_COMPONENT:-obs}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${OBS_COMPONENT:-obs}" "$*" >&2; exit 1; }

# Absolute path of a binary (an override, else from PATH), or nothing.
find_bin() {
  local path="${1:-$(command -v "$2" || true)}"
  if [[ -n "$path" && -x "$path" ]]; then
    readlink -f "$path"
  fi
}

# Die with the install hint unless the binary was found.
require_bin() {
  [[ -n "$1" ]] || die "$2 not found: run deploy/prometheus/install.sh (make prom-install) or put $2 on PATH"
}

# PID from a pid file, only if that process runs the expected binary with the
# expected config file on its command line: a recycled PID is never trusted.
owned_pid() {
  local pidfile="$1" binary="$2" marker="$3" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(tr -dc '0-9' <"$pidfile")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 0
  [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$binary" ]] || return 0
  if tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$marker"; then
    echo "$pid"
  fi
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

http_ok() {
  curl -fsS --max-time 3 -o /dev/null "$1" 2>/dev/null
}

# Start-up wait: until URL answers 2xx, the process dies, or the timeout.
wait_ready() {
  local pid="$1" url="$2" timeout="$3" logfile="$4" deadline
  deadline=$(($(date +%s) + timeout))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" >&2 || true
      die "process $pid exited during start-up (log $logfile)"
    fi
    http_ok "$url" && return 0
    if (($(date +%s) >= deadline)); then
      tail -n 30 "$logfile" >&2 || true
      die "pid $pid not ready at $url after ${timeout}s; it is still running (log $logfile)"
    fi
    sleep 0.3
  done
}

# SIGTERM, then SIGKILL after the timeout; returns when the process is gone.
stop_pid() {
  local pid="$1" timeout="$2" deadline
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$(($(date +%s) + timeout))
  while kill -0 "$pid" 2>/dev/null; do
    if (($(date +%s) >= deadline)); then
      log "pid $pid still alive after ${timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$(($(date +%s) + 10))
    fi
    sleep 0.2
  done
}

# Write a file atomically (Prometheus watches file_sd files and could read a
# half-written one).
write_atomic() {
  local dest="$1" tmp
  tmp="$(mktemp "$dest.XXXXXX")"
  cat >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$dest"
}
