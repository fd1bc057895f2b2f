"""Helpers for tests, benchmarks and capture-making scripts (not used when capturing)."""
