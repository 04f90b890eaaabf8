"""Stage 5 — scores: feature entropy from birth points, and unit rankings (pure math; ranking reads results files)."""
