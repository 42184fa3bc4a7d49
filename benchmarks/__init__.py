"""Benchmarks: each times the project's job against a plain baseline in the same run."""
