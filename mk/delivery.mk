# Delivery guarantees (libs/textpulse/kafka/transactions.py, docs/guarantees.md) — included by the main Makefile.
#   make test-delivery        in-memory checks + SIGKILL tests of route/alert on the real Kafka (~3 min)
#   make test-delivery-slow   + classify with models and a private broker SIGKILLed/restarted (~4 min more)

DELIVERY_PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
DELIVERY_TESTS := tests/inmemory/test_delivery_modes.py tests/integration/test_exactly_once_runner.py \
	tests/integration/test_exactly_once_route.py tests/integration/test_exactly_once_alert.py \
	tests/integration/test_exactly_once_pipeline.py

.PHONY: test-delivery test-delivery-slow

test-delivery: ## Exactly-once / at-least-once: refusal on Tansu, abort+retry, fencing, SIGKILL mid-stream (real Kafka)
	$(DELIVERY_PY) -m pytest $(DELIVERY_TESTS) -q -m "not slow"

test-delivery-slow: ## The above plus classify (tiny models) and a broker SIGKILL/restart, exactly-once
	$(DELIVERY_PY) -m pytest $(DELIVERY_TESTS) tests/integration/test_exactly_once_classify.py \
		tests/integration/test_exactly_once_broker_restart.py -q
