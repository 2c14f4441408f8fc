# The runtime and its function bundle, on Debian 12 and its Python 3.11: the base is public
# (debian:bookworm-slim) and can be made anywhere the way Debian's images are made
# (stack/images.py does, here). bjoern compiles against libev, so the packages are installed
# into a virtualenv in a first stage with the compiler; the final image copies the virtualenv
# and keeps only the runtime libraries.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS packages
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev gcc libc6-dev libev-dev \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
# A CA bundle for pip may come as the build secret pip_ca (a proxy that re-signs TLS, as on
# the project's own machines: deploy/compose.local.yml); without it pip trusts its own.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip wheel \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
 && /opt/venv/bin/pip uninstall -y -q pip wheel setuptools

FROM ${BASE_IMAGE}
# The named volumes (sockets, queue, metrics) take the ownership of these folders when compose
# makes them: the app (uid 10001) may create its socket and journals there.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libev4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --home-dir /app app \
 && mkdir -p /run/app /var/lib/app/queue /var/lib/app/state /var/lib/app/metrics \
 && chown -R app:app /run/app /var/lib/app
COPY --from=packages /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY config/ config/
COPY migrations/ migrations/
COPY functions.yaml ./
COPY functions/ functions/
COPY payments/ payments/
COPY runtime/ runtime/
RUN python -m compileall -q /app
USER app
CMD ["python", "-m", "runtime", "serve", "--instance", "app1"]
