"""Benchmarks of claude-queue against baselines measured in the same run.

`python -m bench [--quick] [--only NAME,...]` runs them, prints a table and writes
`bench/results.json`. See bench/README.md for what each benchmark measures.
"""
