"""Beam compatibility: the Arrow coder and the local runner's adapted evaluators."""
