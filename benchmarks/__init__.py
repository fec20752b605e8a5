"""The benchmark suite: `pytest benchmarks --benchmark` (see BENCHMARKS.md)."""
