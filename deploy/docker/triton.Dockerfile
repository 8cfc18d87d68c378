# Triton for textpulse: the server release of deploy/triton (2.51.0 = the 24.10
# container) plus what the exported python-backend models import (torch,
# transformers, safetensors). See deploy/triton/README.md "GPU".
#   docker build -f deploy/docker/triton.Dockerfile -t textpulse-triton .
# Not built on the development machine (no Docker there); linted with hadolint.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
# cu124: a CUDA build the 24.10 driver stack supports. numpy<2: the 24.10
# python-backend stub predates the NumPy 2 ABI (deploy/triton/README.md).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "numpy==1.26.4" "torch==2.5.1" --index-url "${TORCH_INDEX_URL}" \
    && pip install "numpy==1.26.4" "transformers==4.46.3" "tokenizers==0.20.3" "safetensors==0.4.5"
# The image's unprivileged triton-server user (uid 1000; the chart runs it as
# 10001 anyway); HOME on /tmp so the root filesystem can be read-only.
USER 1000:1000
ENV HOME=/tmp HF_HOME=/tmp/hf
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=3s --start-period=300s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/v2/health/ready"]
# The image's entrypoint (nvidia_entrypoint.sh) runs the command given.
CMD ["tritonserver", "--model-repository=/models"]
