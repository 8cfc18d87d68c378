# Helm chart (helm/textpulse), container images and the compose stack.
# Included by the main Makefile (-include mk/*.mk). helm is built from source
# through the Go module proxy into .cache/helm/<version>/ (deploy/helm/build.sh).

HELM_VERSION ?= v3.22.0
HELM := .cache/helm/$(HELM_VERSION)/helm
HELM_CHART := helm/textpulse

.PHONY: helm helm-lint helm-template helm-package test-helm lint-docker

helm: $(HELM) ## Build helm $(HELM_VERSION) from the Go module proxy into .cache/helm (idempotent; ~9-12 min cold)

$(HELM):
	HELM_VERSION=$(HELM_VERSION) bash deploy/helm/build.sh

helm-lint: $(HELM) ## helm lint --strict over the chart with each values file of helm/textpulse/ci
	$(HELM) lint --strict $(HELM_CHART)
	for f in $(HELM_CHART)/ci/*.yaml; do $(HELM) lint --strict $(HELM_CHART) -f $$f || exit 1; done

helm-template: $(HELM) ## Render the chart with its defaults (VALUES=file to add a values file)
	$(HELM) template textpulse $(HELM_CHART) $(if $(VALUES),-f $(VALUES))

# The chart links deploy/prometheus/rules and deploy/grafana/dashboards (rules/, dashboards/): one
# source, which helm package follows into the archive (tests/helm renders the packaged chart).
helm-package: $(HELM) ## Package the chart with its linked rules and dashboards into dist/
	$(HELM) package $(HELM_CHART) --destination dist

# One run of the whole folder, no -m: under CI=true a deselected test fails the session (tests/ci.py).
test-helm: ## Chart, image and compose tests (builds helm when missing)
	$(or $(PYTHON),.venv/bin/python) -m pytest -q tests/helm

lint-docker: ## hadolint over every Dockerfile
	.venv/bin/hadolint services/*/Dockerfile deploy/docker/*.Dockerfile
