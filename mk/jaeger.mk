# Local Jaeger (tracing backend): built from source through the Go module proxy into
# .cache/jaeger/<version>/ (deploy/jaeger/build.sh), run all-in-one with in-memory storage on
# 127.0.0.1 (OTLP/HTTP 4318, query API/UI 16686). Included by the main Makefile (-include mk/*.mk).
# Settings come from the environment: JAEGER_VERSION, JAEGER_*_PORT, JAEGER_RUN_DIR (deploy/jaeger/lib.sh).

JAEGER_VERSION ?= v1.75.0
JAEGER := .cache/jaeger/$(JAEGER_VERSION)/jaeger

.PHONY: jaeger-build jaeger-up jaeger-down jaeger-status test-tracing

jaeger-build: $(JAEGER) ## Build Jaeger (cmd/jaeger, JAEGER_VERSION=v1.75.0) from the Go module proxy into .cache/jaeger (idempotent; ~20 min cold, ~15 s with a warm Go cache)

$(JAEGER):
	JAEGER_VERSION=$(JAEGER_VERSION) bash deploy/jaeger/build.sh

jaeger-up: $(JAEGER) ## Start Jaeger on 127.0.0.1 (OTLP/HTTP :4318, UI and API :16686); services trace with TEXTPULSE_OTLP_ENDPOINT=http://127.0.0.1:4318
	JAEGER_VERSION=$(JAEGER_VERSION) bash deploy/jaeger/start.sh

jaeger-down: ## Stop the local Jaeger (its in-memory traces go with it)
	bash deploy/jaeger/stop.sh

jaeger-status: ## Whether the local Jaeger runs, and which services sent it spans
	-bash deploy/jaeger/status.sh

test-tracing: install kafka-fetch jaeger-build test-models ## Tracing: unit tests, then one event followed through Jaeger (real Kafka, Jaeger)
	$(or $(PYTHON),.venv/bin/python) -m pytest -q libs/textpulse/observability/test_tracing.py
	$(or $(PYTHON),.venv/bin/python) -m pytest -q -m jaeger tests/integration/test_tracing_jaeger.py
