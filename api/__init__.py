"""The HTTP API (FastAPI): ingestion, lookups, health."""
