"""Tests of the LSGM plugin (vaezoo_lsgm)."""
