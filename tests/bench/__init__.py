"""``make bench``: the benchmark harness (``python -m tests.bench``)."""
