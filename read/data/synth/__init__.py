"""Synthetic on-disk datasets in the real formats (tests, smoke runs; no downloads)."""
