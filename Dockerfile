# Worker image: Python + Node (for the claude CLI) + the claude-queue wheel.
# Only the wheel goes in (shared, producer, worker, gateway, console); devtools, bench and tests never
# reach the image (.dockerignore keeps them out of the build context too).

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared shared
COPY producer producer
COPY worker worker
COPY gateway gateway
COPY console console
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
# The pinned CLI: only its npm manifest and lockfile, installed outside any source tree.
WORKDIR /opt/claude-cli
COPY devtools/claude-cli/package.json devtools/claude-cli/package-lock.json ./
RUN npm ci --no-fund --no-audit --loglevel=error
ENV PATH="/opt/claude-cli/node_modules/.bin:${PATH}"
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# uid 1000, as deploy/k8s runs it. /srv/work is the workspace runs' cwd lie under
# (compose.yaml mounts a volume there, which takes this folder's owner on first use).
RUN useradd --create-home --uid 1000 runner \
 && mkdir -p /srv/work \
 && chown runner:runner /srv/work
USER runner
WORKDIR /home/runner
CMD ["claude-queue", "worker"]
