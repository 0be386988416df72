"""samr1 benchmarks, installed as ``samr1.bench`` (run them with ``samr1 bench NAME`` or ``python bench/bench_X.py``).

Every benchmark runs the torch reference and the fast path in the same run, prints the ratio with the
accuracy beside it, and appends JSON-lines records (see :mod:`samr1.bench.harness`).
"""
