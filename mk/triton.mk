# Local NVIDIA Triton from the nvidia-pytriton wheel (deploy/triton/README.md).
# Included by the main Makefile (-include mk/*.mk). Settings come from the
# environment: TRITON_MODEL_REPO, TRITON_MODELS, TRITON_HTTP_PORT, ...

TRITON_DEPLOY := deploy/triton

.PHONY: triton-fetch triton-up triton-down triton-status test-triton

triton-fetch: ## Download the pinned nvidia-pytriton wheel and assemble tritonserver + python backend
	bash $(TRITON_DEPLOY)/fetch.sh

triton-up: ## Start tritonserver on 127.0.0.1:8000/8001/8002 over .cache/model-repo and wait until ready
	bash $(TRITON_DEPLOY)/start.sh

triton-down: ## Stop the local tritonserver (SIGTERM, then SIGKILL)
	bash $(TRITON_DEPLOY)/stop.sh

triton-status: ## Show the local tritonserver and its models
	bash $(TRITON_DEPLOY)/status.sh

test-triton: ## Integration tests of the Triton deployment (starts its own server on free ports)
	$(or $(PYTHON),.venv/bin/python) -m pytest -m triton tests/integration/test_triton_deploy.py tests/integration/test_recommend_triton.py
