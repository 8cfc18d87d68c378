#!/usr/bin/env bash
# Stop the tritonserver started by start.sh, by its recorded PID: SIGTERM, a
# bounded wait for a graceful drain, then SIGKILL to its process group (which
# also takes the python backend stubs). Idempotent.
set -euo pipefail
# shellcheck source=deploy/triton/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

shm_prefix="textpulse_triton_${TRITON_HTTP_PORT}_"

if ! pid="$(triton_running_pid)"; then
  [[ -f "$TRITON_PID_FILE" ]] && triton_log "removing stale pid file $TRITON_PID_FILE"
  rm -f "$TRITON_PID_FILE"
  triton_log "not running"
  exit 0
fi

triton_log "stopping pid $pid (SIGTERM)"
kill -TERM "$pid" 2>/dev/null || true
# The server itself drains for --exit-timeout-secs (= TRITON_STOP_TIMEOUT).
grace=$(( TRITON_STOP_TIMEOUT + 5 ))
deadline=$(( $(date +%s) + grace ))
while triton_pid_alive "$pid" && (( $(date +%s) < deadline )); do
  sleep 0.2
done
if triton_pid_alive "$pid"; then
  triton_log "still alive after ${grace}s; SIGKILL to process group $pid"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  deadline=$(( $(date +%s) + 10 ))
  while triton_pid_alive "$pid" && (( $(date +%s) < deadline )); do sleep 0.1; done
  if triton_pid_alive "$pid"; then triton_die "pid $pid survived SIGKILL"; fi
fi
# Stubs exit with their parent; a killed server can leave shm regions behind.
rm -f /dev/shm/"$shm_prefix"* 2>/dev/null || true
rm -f "$TRITON_PID_FILE"
triton_log "stopped"
