"""stockq's machine-learning core: data, features, feature store, models, training, evaluation, inference.

Pure of Celery and Flask; configuration arrives as a `Settings` object built at the edges.
"""
