"""Benchmarks for scenarios and delivery (issue 5, part 10)."""
