# The runtime and its function bundle. bjoern compiles against libev, so the wheels are built in
# a first stage with the compiler, and the final image keeps only the libev runtime library.
FROM python:3.11-slim-bookworm AS wheels
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libev-dev \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r /tmp/requirements.txt

FROM python:3.11-slim-bookworm
# The named volumes (sockets, queue) take the ownership of these folders when compose makes them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libev4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --home-dir /app app \
 && mkdir -p /run/app /var/lib/app/queue /var/lib/app/state /var/lib/app/metrics \
 && chown -R app:app /run/app /var/lib/app
COPY --from=wheels /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/* && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY config/ config/
COPY migrations/ migrations/
COPY functions.yaml ./
COPY functions/ functions/
COPY payments/ payments/
COPY runtime/ runtime/
USER app
CMD ["python", "-m", "runtime", "serve", "--instance", "app1"]
