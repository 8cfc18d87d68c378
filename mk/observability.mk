# Observability: Prometheus + Alertmanager (Debian packages), rules and their
# promtool unit tests, Grafana dashboards generated from code.
# Included by the main Makefile (-include mk/*.mk). Settings pass through as
# environment/command-line variables (deploy/prometheus/lib.sh,
# deploy/alertmanager/lib.sh), e.g.
#   make prom-up PROM_PORT=19090 PROM_TARGET_INGEST=127.0.0.1:18080 TEXTPULSE_ENV=dev

PROM_DEPLOY := deploy/prometheus
AM_DEPLOY := deploy/alertmanager
OBS_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: prom-install prom-up prom-down prom-status prom-wipe am-up am-down am-status \
	obs-up obs-down dashboards dashboards-check promtool-test test-prometheus test-observability-live \
	bench-metrics

prom-install: ## apt-get install Debian's prometheus (+ promtool) and prometheus-alertmanager (idempotent)
	bash $(PROM_DEPLOY)/install.sh

prom-up: ## Start Prometheus on 127.0.0.1:9090 (config, targets, data under .run/prometheus); reloads if running
	bash $(PROM_DEPLOY)/start.sh

prom-down: ## Stop the local Prometheus by its PID
	bash $(PROM_DEPLOY)/stop.sh

prom-status: ## Prometheus state and the health of every scrape target
	bash $(PROM_DEPLOY)/status.sh

prom-wipe: ## Stop Prometheus and delete its TSDB and rendered config
	bash $(PROM_DEPLOY)/stop.sh --wipe

am-up: ## Start Alertmanager on 127.0.0.1:9093 (clustering off, state under .run/alertmanager)
	bash $(AM_DEPLOY)/start.sh

am-down: ## Stop the local Alertmanager by its PID
	bash $(AM_DEPLOY)/stop.sh

am-status: ## Alertmanager state and its number of active alerts
	bash $(AM_DEPLOY)/status.sh

obs-up: am-up prom-up ## Alertmanager, then Prometheus

obs-down: prom-down am-down ## Prometheus, then Alertmanager

dashboards: ## Regenerate deploy/grafana/dashboards/*.json from deploy/grafana/generate.py
	$(OBS_PYTHON) deploy/grafana/generate.py

dashboards-check: ## Fail if the committed dashboard JSON is stale
	$(OBS_PYTHON) deploy/grafana/generate.py --check

promtool-test: ## promtool check config / check rules / test rules, amtool check-config
	promtool check config $(PROM_DEPLOY)/prometheus.yml
	promtool check rules $(PROM_DEPLOY)/rules/*.yml
	promtool test rules $(PROM_DEPLOY)/tests/*.yml
	amtool check-config $(AM_DEPLOY)/alertmanager.yml

test-prometheus: ## Offline dashboard checks + promtool/amtool tests + deploy test (own instances on free ports)
	$(OBS_PYTHON) -m pytest tests/unit/test_dashboards.py tests/integration/test_promtool.py tests/integration/test_prometheus_deploy.py

test-observability-live: ## Real pipeline on Kafka scraped by a real Prometheus (29090): every panel and rule evaluated (~2.5 min)
	$(OBS_PYTHON) -m pytest tests/integration/test_observability_live.py -q

BENCH_METRICS_EVENTS ?= 600
BENCH_METRICS_ROUNDS ?= 5
bench-metrics: ## Metrics overhead: ingest→classify→NER with metrics on vs off, alternating rounds, each part measured (target ≤ 3%; a failed scrape fails)
	$(OBS_PYTHON) -m bench.bench_metrics --events $(BENCH_METRICS_EVENTS) --rounds $(BENCH_METRICS_ROUNDS)
