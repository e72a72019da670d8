"""Benchmarks of terraseg stages against baselines measured in the same run."""
