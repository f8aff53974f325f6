"""Benchmarks: printed as tables, not part of the test suite's pass/fail."""
