"""Benchmarks: each row times a recon stage against a reference implementation in the same process."""
