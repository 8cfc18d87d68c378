# Chaos harness and sustained load (tests/chaos/harness, docs/chaos.md) — included by the main Makefile.
# Everything runs on ports of its own (Kafka 9292, ES 9250, Triton 18000-18002, services 18080-18085,
# Prometheus 19090) with state and logs under .run/chaos, so it never touches the usual stack.
#   make chaos                                  full run: 3000 events at 25/s, every component killed once
#   make chaos CHAOS_DELIVERY=exactly_once      the same with Kafka transactions in classify/ner/alert/route
#   make chaos-ci                               the short variant CI runs (tests/chaos, marker chaos)
#   make chaos-load LOAD_MINUTES=10             sustained load at 80% of the measured maximum rate

CHAOS_EVENTS ?= 3000
CHAOS_RATE ?= 25
CHAOS_SEED ?= 7
CHAOS_DELIVERY ?= at_least_once
CHAOS_ARGS ?=
# Empty: the quick-profile models when exported, else the tiny test models.
CHAOS_MODEL_REPO ?=
LOAD_MINUTES ?= 10
LOAD_RATE ?= 0
LOAD_FRACTION ?= 0.8
LOAD_ARGS ?=

.PHONY: chaos chaos-ci chaos-load chaos-down

chaos: install kafka-fetch ## Chaos run: stack + steady replay + SIGKILL/restart of every component; fails on any loss
	$(PY) -m tests.chaos.harness run --events $(CHAOS_EVENTS) --rate $(CHAOS_RATE) --seed $(CHAOS_SEED) \
	  --delivery $(CHAOS_DELIVERY) \
	  $(if $(CHAOS_MODEL_REPO),--model-repo $(CHAOS_MODEL_REPO)) $(CHAOS_ARGS)

chaos-ci: install kafka-fetch ## Short chaos variant (the one CI runs, < 4 min): tests/chaos
	$(PY) -m pytest tests/chaos -q -m chaos

chaos-load: install kafka-fetch ## Sustained load (LOAD_MINUTES at LOAD_FRACTION of the measured max rate): lag and memory flat
	$(PY) -m tests.chaos.harness load --minutes $(LOAD_MINUTES) --rate $(LOAD_RATE) --fraction $(LOAD_FRACTION) \
	  --delivery $(CHAOS_DELIVERY) \
	  $(if $(CHAOS_MODEL_REPO),--model-repo $(CHAOS_MODEL_REPO)) $(LOAD_ARGS)

chaos-down: ## Stop whatever a chaos run left running (after --keep or an interrupted run)
	-KAFKA_PORT=9292 KAFKA_CONTROLLER_PORT=9293 KAFKA_JMX_EXPORTER_PORT=9494 KAFKA_RUN_DIR=.run/chaos/kafka bash deploy/kafka/stop.sh
	-ES_HTTP_PORT=9250 ES_TRANSPORT_PORT=9350 ES_RUN_DIR=.run/chaos/es bash deploy/elasticsearch/stop.sh
	-TRITON_HTTP_PORT=18000 TRITON_GRPC_PORT=18001 TRITON_METRICS_PORT=18002 TRITON_RUN_DIR=.run/chaos/triton bash deploy/triton/stop.sh
	-PROM_PORT=19090 PROM_RUN_DIR=.run/chaos/prometheus bash deploy/prometheus/stop.sh
