# Alerting and routing (services/alert, services/route) — included by the main Makefile.
#   make bench-alert ALERT_BENCH_ARGS="--kafka"   (replay through the real service on real Kafka)
#   make bench-route ROUTE_BENCH_ARGS="--kafka"

ALERT_ROUTE_PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
ALERT_BENCH_ARGS ?=
ROUTE_BENCH_ARGS ?=

.PHONY: bench-alert bench-route alert-run route-run test-alert-route

bench-alert: ## Alerting: detection delay and false alerts on a replayed day of real tweets
	$(ALERT_ROUTE_PY) -m bench.bench_alert $(ALERT_BENCH_ARGS)

bench-route: ## Routing with the trained intent models (make ml-quick-clinc150, make ml-quick-banking77): Banking77 dev, CLINC150 val
	$(ALERT_ROUTE_PY) -m bench.bench_route $(ROUTE_BENCH_ARGS)

alert-run: ## Run the alert service in the foreground (127.0.0.1:8083)
	$(ALERT_ROUTE_PY) -m services.alert.app

route-run: ## Run the route service in the foreground (127.0.0.1:8084)
	$(ALERT_ROUTE_PY) -m services.route.app

test-alert-route: ## Unit, in-memory and integration tests of alert and route (real Kafka + Alertmanager)
	$(ALERT_ROUTE_PY) -m pytest services/alert services/route tests/inmemory/test_alert_inmemory.py \
		tests/inmemory/test_route_inmemory.py tests/integration/test_alert_kafka.py tests/integration/test_route_kafka.py
