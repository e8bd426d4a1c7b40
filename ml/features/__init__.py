"""Features: technical indicators, their Feast definitions, the feature store and the ingest pipeline."""
