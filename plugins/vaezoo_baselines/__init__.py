"""Baseline VAEs as vaezoo components."""
