"""The MLflow registry and model trust: store plumbing, model-file trust, promotion policy."""
