"""The worker: runs the Claude CLI for queued jobs and publishes what it prints."""
