# carepath service image (docs/operations.md, "The container image").
#   docker build -t carepath .
#   docker run -p 8000:8000 -e DATABASE_URL=postgresql+psycopg://user:pw@db:5432/carepath carepath
# The service migrates the registry when it starts; it runs as the unprivileged user `carepath`.

# -- build: wheels for carepath and every dependency (durable-rules is compiled here, with gcc)
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY api ./api
COPY cli ./cli
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- run: no compiler, no source tree beyond what the service reads at run time
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels carepath \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin carepath
WORKDIR /app
COPY templates ./templates
COPY --chown=carepath:carepath protocols ./protocols
RUN mkdir -p /app/var && chown carepath:carepath /app/var
USER carepath
# SQLite in /app/var unless DATABASE_URL says otherwise; protocols are published into /app/protocols.
ENV DATABASE_URL=sqlite:////app/var/carepath.db \
    CAREPATH_TEMPLATES=/app/templates
VOLUME ["/app/var"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["carepath", "serve", "--host", "0.0.0.0", "--port", "8000", "--protocols", "/app/protocols"]
