"""The benchmark: the pipeline against bare same-work code, on synthetic data."""
