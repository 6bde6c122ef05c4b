"""Serving: the FastAPI app, its routes, request schema, limits and ingest jobs."""
