"""Benchmarks: commands that measure loopline against a baseline taken in the same run."""
