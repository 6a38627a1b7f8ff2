# The image every pod of a cluster deployment runs: the code server and the run and step pods Dagster starts
# (deploy/helm-values.yaml, deploy/executor.yaml) and the training Jobs of assets/launch.py. Its steps are the
# README's set-up: uv, the locked environment (uv.lock), bytecode compiled once at install.
#
#   docker build -t registry.example.org/mangacolor:$(git rev-parse --short HEAD) .
#
# The lock pins a CUDA 13 build of torch: GPU nodes need an NVIDIA driver >= 580.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PATH=/app/.venv/bin:$PATH \
    MANGACOLOR_HOME=/var/lib/mangacolor

RUN pip install --no-cache-dir uv
WORKDIR /app

# The locked dependencies first, so that a code change does not reinstall them; no dev tools (pytest, moto).
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --compile-bytecode --no-dev --no-install-project

COPY . .
RUN uv sync --frozen --compile-bytecode --no-dev \
    && python -m compileall -q mangacolor assets pipelines \
    && mkdir -p "$MANGACOLOR_HOME"

# Run-time state that is not in the store (work folder, feature caches) goes under MANGACOLOR_HOME; the pods
# keep what must outlive them in S3 (MANGACOLOR_ARTIFACT_ROOT, MANGACOLOR_WORK_MIRROR).
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "--python-file", "pipelines/definitions.py"]
