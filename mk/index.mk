# Index service (services/index): Kafka → Elasticsearch, PII redaction, search API on :8085.
# Included by the main Makefile (-include mk/*.mk). Needs Kafka (make kafka-up) and
# Elasticsearch (make es-up); settings: TEXTPULSE_INDEX_* and TEXTPULSE_KAFKA_*.

INDEX_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
BENCH_INDEX_DOCS ?= 100000
BENCH_INDEX_QUERIES ?= 300
BENCH_INDEX_ROUNDS ?= 3
# Extra bench flags, e.g. --live (produce inside the service's clock, the pre-backlog method) or --keep.
BENCH_INDEX_ARGS ?=

.PHONY: index-run test-index bench-index

index-run: ## Run the index service (Kafka → Elasticsearch, search API on 127.0.0.1:8085)
	$(INDEX_PYTHON) -m services.index.app

test-index: ## Unit tests of services/index, then its integration tests (real Elasticsearch + Kafka)
	$(INDEX_PYTHON) -m pytest services/index
	$(INDEX_PYTHON) -m pytest -m "es and kafka" tests/integration/test_index_es.py

bench-index: ## Index benchmark: service docs/s vs raw async_streaming_bulk at the service's chunking and concurrency (target ≥ 0.8×), search p50/p95 over uvicorn vs direct ES (BENCH_INDEX_DOCS=100000)
	$(INDEX_PYTHON) -m bench.bench_index --docs $(BENCH_INDEX_DOCS) --queries $(BENCH_INDEX_QUERIES) --rounds $(BENCH_INDEX_ROUNDS) $(BENCH_INDEX_ARGS)
