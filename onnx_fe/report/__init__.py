"""Stage 7 — report: plots (and the HTML report)."""
