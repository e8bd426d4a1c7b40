"""Registry: the MLflow model registry, its tracking store, model cards and registration."""
