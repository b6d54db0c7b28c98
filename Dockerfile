# syntax=docker/dockerfile:1
# ses-tracker: `docker build -t ses-tracker .` then
#   docker run -p 8000:8000 -e SES_TRACKER_REDIS_URL=redis://redis:6379/0 ses-tracker
# Settings are SES_TRACKER_* environment variables (see README). Listening on every
# address, the image answers loopback names only (open http://localhost:8000/);
# deployed, set SES_TRACKER_PUBLIC_URL (or SES_TRACKER_ALLOWED_HOSTS) to its names.

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY service ./service
COPY consumers ./consumers
COPY api ./api
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin ses-tracker
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SES_TRACKER_HOST=0.0.0.0 \
    SES_TRACKER_ALLOWED_HOSTS=localhost
USER 10001:10001
# 8000: the API, page and push endpoints; 9000: the admin port (metrics, probes, reload).
EXPOSE 8000 9000
# /healthz says the process serves; readiness (/readyz) is for the orchestrator.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SES_TRACKER_PORT', '8000'), timeout=2)"]
# SIGTERM drains and exits 0; orchestrators should allow 40 s (docker stop -t 40).
STOPSIGNAL SIGTERM
ENTRYPOINT ["ses-tracker"]
CMD ["serve"]
