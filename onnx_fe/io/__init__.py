"""Stage 6 — storage: the HDF5 results file and CSV tables."""
