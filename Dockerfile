# cinstyle service image. CPU by default; the same file builds the GPU image.
#
#   CPU:  DOCKER_BUILDKIT=1 docker build -t cinstyle .
#   GPU:  DOCKER_BUILDKIT=1 docker build --build-arg TORCH_VARIANT=cuda -t cinstyle:cuda .
#         docker run --gpus all -p 8000:8000 cinstyle:cuda
#
# Build arguments (see docs/docker.md for the full story):
#   BASE_IMAGE        a Debian/Ubuntu-like image; python3 >= 3.11 is installed with apt
#                     when the image has none (e.g. a debootstrap base), default
#                     python:3.11-slim-bookworm. For a CUDA base use e.g.
#                     nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 (python 3.12).
#   TORCH_VARIANT     cpu (default: the PyTorch CPU wheel index, no CUDA libraries)
#                     or cuda (PyPI's Linux wheels, which carry the CUDA runtime).
#   TORCH_INDEX_URL   overrides the index that TORCH_VARIANT picks.
#   TORCH_VERSION / TORCHVISION_VERSION   pins ("" = newest on the index).
#   WHEELHOUSE_IMAGE  an image whose root holds torch/torchvision wheels (and their
#                     dependencies); when it has a torch wheel, torch is installed
#                     from it offline through a bind mount, so the wheels never
#                     become a layer of their own. Default: scratch (empty).
#   APP_UID           uid of the unprivileged runtime user (default 10001).
# Secret (optional): `--secret id=pip_cert,src=/path/ca-bundle.crt` is given to pip
# as PIP_CERT for TLS-intercepting networks; it is mounted, never stored in a layer.
#
# Needs BuildKit (RUN --mount). Deliberately no `# syntax=` line: that would pull the
# Dockerfile frontend from Docker Hub, which some build hosts cannot reach.

ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG WHEELHOUSE_IMAGE=scratch

FROM ${WHEELHOUSE_IMAGE} AS wheelhouse

# --- base: python3 >= 3.11, shared by the builder and the runtime ---------------------
FROM ${BASE_IMAGE} AS base
SHELL ["/bin/sh", "-eu", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# hadolint ignore=DL3008
RUN if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), f"cinstyle needs python >= 3.11, the base image has {sys.version}"'

# --- builder: a virtualenv at /opt/venv with torch and the other dependencies ---------
FROM base AS builder
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=""
ARG TORCH_VERSION=""
ARG TORCHVISION_VERSION=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120
# hadolint ignore=DL3008
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3-venv; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi; \
    python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, alone: the biggest layer, rebuilt only when its arguments change.
# (Versions are pinned through TORCH_VERSION / TORCHVISION_VERSION.)
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip_cert \
    --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    torch="torch${TORCH_VERSION:+==$TORCH_VERSION}"; \
    vision="torchvision${TORCHVISION_VERSION:+==$TORCHVISION_VERSION}"; \
    if ls /wheelhouse/torch-*.whl >/dev/null 2>&1; then \
        echo "installing $torch $vision from the wheelhouse (offline)"; \
        pip install --no-index --find-links /wheelhouse "$torch" "$vision"; \
    else \
        case "$TORCH_VARIANT" in \
            cpu) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
            cuda) index="${TORCH_INDEX_URL:-https://pypi.org/simple}" ;; \
            *) echo "TORCH_VARIANT must be cpu or cuda, got '$TORCH_VARIANT'" >&2; exit 2 ;; \
        esac; \
        echo "installing $torch $vision ($TORCH_VARIANT) from $index"; \
        pip install --index-url "$index" "$torch" "$vision"; \
    fi; \
    python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

# The other dependencies, read from pyproject.toml, so that code changes reuse this layer;
# torch is held at the variant just installed (a dependency may never swap in another build).
COPY pyproject.toml /src/pyproject.toml
RUN --mount=type=secret,id=pip_cert \
    --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    python -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt; \
    python -c 'from importlib.metadata import version; print(*(f"{p}=={version(p)}" for p in ("torch", "torchvision")), sep="\n")' \
        > /tmp/constraints.txt; \
    pip install --find-links /wheelhouse -c /tmp/constraints.txt -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt /tmp/constraints.txt

# --- project: cinstyle as a wheel (the bundled model/checkpoints/* are package data) ----
FROM builder AS project
COPY README.md /src/README.md
COPY model /src/model
COPY training /src/training
COPY app /src/app
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    pip wheel --no-deps --wheel-dir /dist /src

# --- runtime ----------------------------------------------------------------------------
FROM base AS runtime
ARG APP_UID=10001
LABEL org.opencontainers.image.title="cinstyle" \
      org.opencontainers.image.description="Multi-style neural style transfer service (conditional instance norm)" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --gid "${APP_UID}" cinstyle; \
    useradd --uid "${APP_UID}" --gid "${APP_UID}" --create-home --home-dir /home/cinstyle \
        --shell /usr/sbin/nologin cinstyle; \
    mkdir -p /data; \
    chown "${APP_UID}:${APP_UID}" /data
# Two layers: the dependencies (GBs, changes with pyproject.toml only), then the project
# (small, changes with every commit), so that a code change pulls and pushes megabytes.
COPY --from=builder /opt/venv /opt/venv
RUN --mount=type=bind,from=project,source=/dist,target=/dist \
    /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /dist/cinstyle-*.whl; \
    /opt/venv/bin/cinstyle --help >/dev/null
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/cinstyle \
    CINSTYLE_HOST=0.0.0.0 \
    CINSTYLE_PORT=8000 \
    CINSTYLE_DATA_DIR=/data \
    CINSTYLE_DEVICE=auto \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER ${APP_UID}:${APP_UID}
WORKDIR /home/cinstyle
EXPOSE 8000
# /readyz is 200 only once the model is loaded; python instead of curl keeps the image lean.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CINSTYLE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["cinstyle"]
CMD ["serve"]
