"""Benchmarks of the course's code against reference implementations (``python -m benchmarks``)."""
