"""Experiments: a whole run of one kind (score, ablate, compare), built from the stages."""
