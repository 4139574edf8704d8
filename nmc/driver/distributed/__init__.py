"""Sweeps, fit search and sharded evaluation on Ray (the `distributed` extra)."""
