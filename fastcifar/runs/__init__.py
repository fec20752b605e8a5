"""Runs as a user starts them: one run, a plan of several (seeds, LR sweeps), the life of a run
folder from claim to outcome, a saved run read back, and the aggregate over many folders."""
