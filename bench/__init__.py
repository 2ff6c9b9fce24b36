"""Benchmarks: each prints one JSON line with ours, the baseline measured in the same run, and the ratio."""
