"""NVAE (Vahdat & Kautz, NeurIPS 2020) as vaezoo components."""
