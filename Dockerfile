# The user service's production image: `python -m app` (uvicorn) as a fixed non-root user,
# made to run on a read-only root filesystem. docs/deploy-image.md has the build and run
# commands, including a build behind a TLS-inspecting proxy without registry access.
#
#   podman build --format docker -t user-service .     # or: docker build -t user-service .
#
# (--format docker: podman's default OCI format has no HEALTHCHECK.)

# Both stages start from the same Python so that the virtual environment's interpreter
# link (bin/python -> the base's python3) is valid in the runtime stage. The default is the
# official image pinned by digest (the multi-platform index of python:3.11-slim-bookworm
# with Python 3.11.16, as recorded by docker-library/repo-info); a tag alone could change
# under a rebuild. Any Debian-based (glibc: the service tunes glibc's allocator at start)
# image with python3 >= 3.11 works, e.g. the one deploy/container/build-base-image.sh makes.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

# --- builder: the locked dependencies and the service, installed into /opt/venv ------------
# checkov:skip=CKV_DOCKER_7:PYTHON_IMAGE defaults to an image pinned by digest; checkov does not resolve ARG
FROM ${PYTHON_IMAGE} AS builder

# uv from PyPI (not ghcr.io/astral-sh/uv: one registry fewer to reach), pinned to the
# version that wrote uv.lock, in a venv of its own that never leaves this stage. The
# system CA bundle, not pip's own, so that a proxy's CA added to the base image is trusted
# (on the official image the two hold the same Mozilla roots). The venv is activated rather
# than its pip called by path so that hadolint recognises the pip install and checks it.
ARG UV_VERSION=0.13.9
RUN python3 -m venv /opt/uv \
    && . /opt/uv/bin/activate \
    && pip install --no-cache-dir --disable-pip-version-check \
        --cert /etc/ssl/certs/ca-certificates.crt "uv==${UV_VERSION}"

# The base image's interpreter (never a downloaded one), bytecode compiled here because
# the runtime filesystem is read-only, copies rather than links from a cache that is not
# kept, and the system trust store (for the same proxy reason as above).
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON_PREFERENCE=only-system \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_SYSTEM_CERTS=1

WORKDIR /src
# Dependencies first, in their own layer: rebuilt only when the lock changes, not on every
# change to the code.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --locked --no-dev --no-install-project
# Then the service itself, as a regular (non-editable) package in site-packages, so that
# the runtime stage needs nothing from /src. README.md is the package's readme (metadata).
COPY README.md ./
COPY app ./app
RUN /opt/uv/bin/uv sync --locked --no-dev --no-editable

# --- rootfs: the runtime's whole filesystem, gathered from the stage above ----------------
# The interpreter and its standard library, the virtual environment, the shared libraries
# they link (as ldd resolves them), CA certificates, /etc/passwd with the service's user,
# and the copyright and dpkg records of the Debian packages those files came from (for
# scanners). No shell, no package manager, no pip: see deploy/container/runtime_root.py.
FROM builder AS rootfs
# strip (binutils) for the extension modules: deploy/container/build-base-image.sh's base has
# it; on the official image Debian's is installed here, in a stage nothing of which but
# /rootfs reaches the runtime image, so the version is whatever bookworm ships today.
# hadolint ignore=DL3008
RUN command -v strip >/dev/null \
    || { apt-get update && apt-get install -y --no-install-recommends binutils && rm -rf /var/lib/apt/lists/*; }
COPY deploy/container/runtime_root.py /tmp/runtime_root.py
RUN /opt/venv/bin/python /tmp/runtime_root.py /rootfs --uid 10001
# The build identity as a file of the root too. Not only for people: buildah's layer cache
# ignores build arguments except in RUN, and the runtime stage runs nothing, so without a
# root that differs per revision a rebuild reused the last build's LABEL and ENV layers and
# the image named the wrong commit.
ARG VERSION=""
ARG REVISION=unknown
RUN printf 'VERSION=%s\nREVISION=%s\n' "${VERSION}" "${REVISION}" > /rootfs/etc/user-service-release

# --- runtime: that filesystem on an empty image (distroless) ---------------------------------
# Nothing an intruder with code execution could use to fetch or install tools, and half the
# size of the base. Everything is owned by root: the service cannot change its own code.
# Debug a running pod with an ephemeral container instead of a shell (docs/deploy-image.md).
FROM scratch AS runtime
COPY --from=rootfs /rootfs /

# Build identity: OCI labels for registries and scanners, and the same values in the
# user_service_build_info metric. deploy/container/build-image.sh fills them from git and
# pyproject.toml; an empty version makes the service report its package version.
ARG VERSION=""
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="user-service" \
      org.opencontainers.image.description="User service: accounts, argon2id login, JWTs and roles (Litestar, PostgreSQL)" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# The fixed UID/GID 10001 (Kubernetes' runAsUser and file permissions can name it) is in
# the /etc/passwd runtime_root.py wrote, with no home and no shell.

# PATH: the venv's bin alone (an empty image has no other, and "$PATH" would add an empty
# entry, the working directory). HOME=/tmp: the only writable place on a read-only root filesystem (a tmpfs/emptyDir);
# the metrics folder of multi-worker mode is under /tmp too (USER_SERVICE_SERVER__METRICS_DIR).
# Production mode by default: without a PostgreSQL URL and a signing key the service
# refuses to start and names the missing setting.
ENV PATH=/opt/venv/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    USER_SERVICE_ENVIRONMENT=production \
    USER_SERVICE_SERVER__HOST=0.0.0.0 \
    USER_SERVICE_SERVER__PORT=8000 \
    USER_SERVICE_BUILD_VERSION=${VERSION} \
    USER_SERVICE_BUILD_COMMIT=${REVISION}

# An empty working directory: settings also come from a .env file in it, and there is none.
WORKDIR /app
USER 10001:10001
EXPOSE 8000

# /health/live never touches the database, so an outage of PostgreSQL does not get the
# container restarted (readiness handles that). Python in exec form: there is no shell and
# no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('USER_SERVICE_SERVER__PORT', '8000') + '/health/live', timeout=2)"]

# The server is PID 1, started directly (exec form, no shell in between), so SIGTERM
# reaches it: uvicorn installs handlers for SIGTERM and SIGINT, which is what a PID 1
# needs (the kernel drops signals PID 1 has no handler for), the service drains for
# USER_SERVICE_HTTP__DRAIN_SECONDS and then shuts down gracefully, and it exits 0. No init
# (tini, --init) is needed: the service starts no child processes whose zombies it would
# have to reap (with USER_SERVICE_SERVER__WORKERS > 1 uvicorn waits for its own workers).
# Migrations use the same image with another entry point:
#   --entrypoint litestar <image> --app app.main:create_app schema migrate
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "app"]
