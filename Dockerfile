# syntax=docker/dockerfile:1
# KAITO Portal image: one image for the web (daphne) and the reconciler (`python manage.py reconcile`).
# Build: docker build -t kaito-portal:0.1.0 .     (deploy/README.md: push to ACR, install the chart)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment with the dependencies from pyproject.toml (wheels only, no compiler) ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only pyproject.toml first, so that code changes reuse the dependency layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --upgrade pip \
    && pip install --only-binary=:all: -r requirements.txt \
    && pip check

# --- runtime: slim, non-root, static files collected at build ---------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=portal.settings
RUN groupadd --system --gid 10001 portal \
    && useradd --system --uid 10001 --gid portal --home-dir /app --no-create-home --shell /usr/sbin/nologin portal
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code belongs to root and is read-only for the portal user (the chart also mounts / read-only).
COPY . .
# collectstatic runs the production settings (hashed, compressed files for WhiteNoise); the values below exist only
# for this build step: nothing connects to them, and the real ones come from the Secret at run time.
RUN DJANGO_PRODUCTION=1 \
    DJANGO_SECRET_KEY=build-only-collectstatic-0123456789abcdefghijklmnopqrstuvwxyz \
    DATABASE_URL=postgres://build@localhost:5432/build \
    REDIS_URL=redis://localhost:6379/0 \
    python manage.py collectstatic --no-input -v0 \
    && python -m compileall -q /app \
    && chmod -R a+rX /app
USER 10001:10001
EXPOSE 8000 9102
# Docker only (Kubernetes uses the chart's probes): the web answers /healthz, the reconciler its metrics port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-c", "import sys, urllib.request as u\nfor url in ('http://127.0.0.1:8000/healthz', 'http://127.0.0.1:9102/metrics'):\n    try:\n        sys.exit(0 if u.urlopen(url, timeout=4).status == 200 else 1)\n    except OSError:\n        pass\nsys.exit(1)"]
# The web; the reconciler runs the same image with: python manage.py reconcile --metrics-port 9102 --metrics-address 0.0.0.0
CMD ["daphne", "--bind", "0.0.0.0", "--port", "8000", "--proxy-headers", "portal.asgi:application"]
