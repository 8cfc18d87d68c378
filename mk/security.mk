# Security: the SASL/SCRAM-over-TLS Kafka broker, API keys and limits, bad-input property tests.
# Included by the main Makefile. See docs/security.md.
#   make kafka-sasl-up      # broker on 127.0.0.1:9192 (run dir .run/kafka-sasl), client settings in .run/kafka-sasl/client.env
#   make test-security      # API guard unit tests, property tests, SASL_SSL integration test

SECURITY_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
SASL_ENV = KAFKA_SECURITY=sasl_ssl

.PHONY: kafka-sasl-up kafka-sasl-down kafka-sasl-status kafka-sasl-reset kafka-sasl-certs test-security test-property

kafka-sasl-up: ## Start the SASL_SSL (SCRAM-SHA-512 over TLS) broker on 127.0.0.1:9192 (test CA, users, client.env)
	$(SASL_ENV) bash deploy/kafka/start.sh

kafka-sasl-down: ## Stop the SASL_SSL broker
	$(SASL_ENV) bash deploy/kafka/stop.sh

kafka-sasl-status: ## Exit 0 if the SASL_SSL broker is running and answering (with credentials)
	$(SASL_ENV) bash deploy/kafka/status.sh

kafka-sasl-reset: ## Stop the SASL_SSL broker and delete its data (credentials and certificates are kept)
	$(SASL_ENV) bash deploy/kafka/stop.sh --wipe

kafka-sasl-certs: ## Create a new test CA and broker certificate for the SASL_SSL broker (restart it afterwards)
	$(SASL_ENV) bash deploy/kafka/certs.sh --force

test-property: ## Hypothesis bad-input tests of every edge (in memory, < 1 min)
	$(SECURITY_PYTHON) -m pytest tests/property -q

test-security: ## API keys/limits, bad-input properties, Kafka SASL_SSL end to end (starts the secured broker)
	$(SECURITY_PYTHON) -m pytest tests/unit/test_apikey.py tests/unit/test_apikey_services.py tests/property tests/integration/test_kafka_sasl.py -q
