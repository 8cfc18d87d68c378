# The whole pipeline on the real local Kafka, and the state of the local stack.
# Included by the main Makefile (-include mk/*.mk). See deploy/pipeline/lib.sh
# for the settings, e.g.
#   make pipeline-up PIPELINE_SERVICES="ingest classify ner"
#   TEXTPULSE_INGEST_HTTP_PORT=18080 make pipeline-up

.PHONY: pipeline-up pipeline-down status kcat-install lag-exporter

pipeline-up: install ## Start ingest, classify, ner, route, alert on the local Kafka with the exported models (background; .run/pipeline)
	bash deploy/pipeline/up.sh

pipeline-down: ## Stop the services pipeline-up started (by their PIDs; Kafka and topics stay)
	bash deploy/pipeline/down.sh

lag-exporter: install ## Run the lag exporter in the foreground (127.0.0.1:9309, scraped as job lag-exporter): lag of every textpulse group in records and seconds
	$(PY) -m textpulse.cli lag-exporter --host 127.0.0.1 --port 9309

status: ## Which parts of the local stack run: Kafka, Prometheus, Alertmanager, Elasticsearch, Triton, the services
	@bash deploy/pipeline/status.sh

kcat-install: ## apt-get install Debian's kcat (the outside Kafka client of the edge test; needs root, idempotent)
	bash deploy/kafka/kcat-install.sh
