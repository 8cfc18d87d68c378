# Local Apache Kafka (single-node KRaft) — included by the main Makefile.
# Settings pass through as environment/command-line variables, e.g.
#   make kafka-up KAFKA_PORT=29092 KAFKA_CONTROLLER_PORT=29095 KAFKA_RUN_DIR=.run/kafka2
# See deploy/kafka/README.md for all of them.

KAFKA_DEPLOY_DIR ?= deploy/kafka
KAFKA_MK_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: kafka-fetch kafka-up kafka-down kafka-kill kafka-status kafka-reset kafka-logs kafka-test clean-topics

kafka-fetch: ## Download Kafka + JMX exporter jars into .cache/kafka/<version> (idempotent)
	bash $(KAFKA_DEPLOY_DIR)/fetch.sh

kafka-up: ## Start the local broker on 127.0.0.1:9092 and wait until it answers
	bash $(KAFKA_DEPLOY_DIR)/start.sh

kafka-down: ## Stop the local broker (SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT)
	bash $(KAFKA_DEPLOY_DIR)/stop.sh

kafka-kill: ## SIGKILL the local broker (crash tests)
	bash $(KAFKA_DEPLOY_DIR)/stop.sh --kill

kafka-status: ## Exit 0 if the local broker is running and answering
	bash $(KAFKA_DEPLOY_DIR)/status.sh

kafka-reset: ## Stop the local broker and delete its data
	bash $(KAFKA_DEPLOY_DIR)/reset.sh

kafka-logs: ## Follow the broker log
	tail -n 100 -F $${KAFKA_RUN_DIR:-.run/kafka}/kafka.log

kafka-test: ## Integration test of the deployment (own broker on free ports)
	$(KAFKA_MK_PYTHON) -m pytest tests/integration/test_kafka_deploy.py -v

# CLEAN_PREFIX narrows it (e.g. CLEAN_PREFIX=t.mytest-); CLEAN_DRY_RUN=1 only lists.
CLEAN_PREFIX ?= t.
clean-topics: ## Delete leftover test topics (names starting with CLEAN_PREFIX, default t.) from the local broker
	$(KAFKA_MK_PYTHON) -m textpulse.cli topics clean --prefix '$(CLEAN_PREFIX)' $(if $(CLEAN_DRY_RUN),--dry-run)
