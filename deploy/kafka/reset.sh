#!/usr/bin/env bash
# Stop the local broker and delete its data: the next start.sh formats a new,
# empty cluster. Same as `stop.sh --wipe`.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/stop.sh" --wipe "$@"
