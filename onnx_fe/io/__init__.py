"""Stage 6 — storage: the HDF5 results file, CSV tables, and locked output directories."""
