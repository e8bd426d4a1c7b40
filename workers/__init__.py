"""Celery app and tasks: `celery -A workers worker -Q training` (also inference, agent, ingest)."""

from stockq.settings import Settings, configure_process_env
from workers.celery_app import QUEUES, create_celery

settings = Settings()
configure_process_env(settings)
app = create_celery(settings)

import workers.signals  # noqa: E402,F401  (connects the worker lifecycle handlers)

__all__ = ["QUEUES", "app", "settings"]
