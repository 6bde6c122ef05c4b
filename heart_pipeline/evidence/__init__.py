"""Models and their evidence: algorithms, statistics, plots, rendering and reports."""
