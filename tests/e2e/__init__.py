"""The real-CLI tier: the whole system, end to end, with the pinned Claude Code CLI.

Each test submits a job, a real RQ worker process runs the real `claude` binary
(`devtools/claude-cli`, version 2.1.330), the CLI talks to the scripted fake model
API (`devtools/fake_anthropic.py`) on 127.0.0.1, and the test reads the events back
from Redis through the client. Nothing reaches the network or a real account: every
run gets its own HOME and TMPDIR, and the developer's ANTHROPIC_* / CLAUDE_CODE_*
variables are removed before any worker starts.

How to run:

    make test-e2e                       # installs the CLI first, then `pytest -m e2e`
    .venv/bin/pytest -q tests/e2e       # once `make install` has been run

Without the CLI the tier is skipped locally (run `make install`) and fails in CI.
Use CLAUDE_QUEUE_TEST_REDIS_URL to pick another Redis database.
"""
