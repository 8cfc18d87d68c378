#!/usr/bin/env bash
# Re-render only the file_sd target files in $PROM_RUN_DIR/targets (what runs
# here, or the PROM_TARGET_<JOB> overrides; see lib.sh). A running Prometheus
# re-reads them on change: no reload, no restart. Called by `make
# pipeline-up` / `pipeline-down` so Prometheus scrapes exactly the started services.
set -euo pipefail
# shellcheck source=deploy/prometheus/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

prom_render_targets
