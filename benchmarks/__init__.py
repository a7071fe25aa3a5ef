"""Speed measurements (ratios within one run), not timed tests. See benchmarks/README.md."""
