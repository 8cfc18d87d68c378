# Local Elasticsearch assembled from Maven Central (deploy/elasticsearch/README.md).
# Included by the main Makefile (-include mk/*.mk). Settings come from the
# environment: ES_HTTP_PORT, ES_TRANSPORT_PORT, ES_RUN_DIR, ES_HEAP, ...

ES_DEPLOY := deploy/elasticsearch

.PHONY: es-fetch es-up es-down es-status es-wipe test-es

es-fetch: ## Download Elasticsearch 8.19 jars from Maven Central and compile its launcher into .cache/elasticsearch
	bash $(ES_DEPLOY)/fetch.sh

es-up: ## Start single-node Elasticsearch on 127.0.0.1:9200 (transport 9300) and wait for yellow/green
	bash $(ES_DEPLOY)/start.sh

es-down: ## Stop the local Elasticsearch (SIGTERM, then SIGKILL)
	bash $(ES_DEPLOY)/stop.sh

es-status: ## Show whether the local Elasticsearch is running and its cluster health
	bash $(ES_DEPLOY)/status.sh

es-wipe: ## Stop the local Elasticsearch and delete its data, logs and config under .run/elasticsearch
	bash $(ES_DEPLOY)/stop.sh --wipe

test-es: ## Integration tests of the Elasticsearch deployment (starts its own node on free ports)
	$(or $(PYTHON),.venv/bin/python) -m pytest -m es tests/integration/test_es_deploy.py
