"""Monitoring (issue 20): scored batches measured against the champion's training rows.

drift.py   the pure core: the training profile, batch summaries (counts, never rows), their merge,
           PSI and chi-square per column, discrimination and calibration on labelled rows, the verdict
report.py  the verdict as one self-contained HTML page and as a markdown artifact
"""
