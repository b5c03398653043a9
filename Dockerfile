# Worker image: Python + Node (for the claude CLI) + claude-queue.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY devtools/claude-cli/package.json devtools/claude-cli/package-lock.json devtools/claude-cli/
RUN cd devtools/claude-cli && npm ci --no-fund --no-audit --loglevel=error
ENV PATH="/app/devtools/claude-cli/node_modules/.bin:${PATH}"
COPY pyproject.toml README.md ./
COPY shared shared
COPY producer producer
COPY worker worker
COPY devtools/__init__.py devtools/fake_anthropic.py devtools/
RUN pip install --no-cache-dir .
RUN useradd --create-home runner
USER runner
CMD ["claude-queue", "worker"]
