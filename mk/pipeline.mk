# Enrichment pipeline (classify + NER) — included by the main Makefile (-include mk/*.mk).
#   make bench-pipeline                       # full run: local + Triton, 2000 tweets (ceiling and naive on the same ones)
#   make bench-pipeline BENCH_PIPELINE_ARGS="--events 300 --latency-events 150 --backends local"
#   make bench-pipeline BENCH_PIPELINE_ARGS="--runtime int8"   # dynamic int8 everywhere, references too (cost: make bench-int8)
#   exit 1 when an event is missing after --timeout or the pipeline beats its raw ceiling (the reference is too weak)
#   make bench-int8                           # torch/ORT x fp32/int8/bf16 per head: dev cost, agreement, sentences/s
#   make test-pipeline                        # unit + in-memory + Kafka + Triton tests of classify/NER

PIPELINE_PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
BENCH_PIPELINE_ARGS ?=

.PHONY: bench-pipeline bench-int8 test-pipeline test-pipeline-fast classify-run ner-run

bench-pipeline: ## Pipeline benchmark: ingest -> classify -> NER on real Kafka, in-process and Triton backends
	$(PIPELINE_PY) -m bench.bench_pipeline $(BENCH_PIPELINE_ARGS)

bench-int8: install models-if-missing ## Runtime x precision per served head (torch/ONNX Runtime, fp32/int8/bf16): dev cost, agreement, speed; BENCH_INT8_ARGS=--record writes each model's default
	PYTHONPATH=libs:. HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PIPELINE_PY) -m bench.bench_int8 $(BENCH_INT8_ARGS)

test-pipeline-fast: ## classify/NER unit + in-memory tests (no broker, no models)
	$(PIPELINE_PY) -m pytest -q services/classify services/ner libs/textpulse/inference/test_resilience.py tests/inmemory/test_classify_ner_inmemory.py

test-pipeline: ## classify/NER: all tests incl. real Kafka and a real tritonserver (trains tiny models once)
	$(PIPELINE_PY) -m pytest -q services/classify services/ner libs/textpulse/inference tests/inmemory/test_classify_ner_inmemory.py tests/integration/test_classify_ner_kafka.py tests/integration/test_classify_ner_triton.py

classify-run: ## Run the classify service (port 8081; TEXTPULSE_TRITON_URL selects Triton)
	$(PIPELINE_PY) -m services.classify.app

ner-run: ## Run the NER service (port 8082; TEXTPULSE_TRITON_URL selects Triton)
	$(PIPELINE_PY) -m services.ner.app
