"""Create the local MLflow tracking store exactly once, whatever number of processes start together.

MLflow creates and migrates a sqlite schema inside its SqlAlchemyStore constructor when it finds the
tables missing (`mlflow.store.db.utils._all_tables_exist` -> `_initialize_tables`, an alembic upgrade to
heads). That check and the migration are not atomic across processes: several worker processes starting on
a fresh var dir each see a half-built schema and migrate it at once (`table _alembic_tmp_tags already
exists`, `Online migration expected to match one row`), and the loser's first job fails. Holding a file lock
beside the database while the first store is built serialises that: the first holder migrates, every later
one finds all tables and only verifies the schema (milliseconds).
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock
from sqlalchemy.engine import make_url

# MLflow decides on telemetry when it is imported (see ml/registry/mlflow_registry.py), so this precedes
# the import.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# A fresh schema takes about 1.3 s to build on the development machine; a lock held far longer than this
# means a stuck holder, and the caller gets filelock's Timeout rather than waiting forever.
_LOCK_TIMEOUT_S = 120.0


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a sqlite tracking URI, or None for anything else (a tracking server, another
    database, an in-memory sqlite)."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    database = make_url(tracking_uri).database
    return Path(database) if database and database != ":memory:" else None


def ensure_tracking_store(tracking_uri: str, artifact_root: str | None = None) -> None:
    """Create and migrate the sqlite store at `tracking_uri` under a file lock; a no-op for other stores.

    A tracking server (http/https) owns its own schema; a shared database server is migrated by its
    operator (`mlflow db upgrade`), since a file lock cannot serialise processes on several hosts.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    # Imported here: it configures every SQLAlchemy mapper of MLflow's store on import (seconds of a
    # worker's start), which a process pointed at a tracking server never uses.
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=_LOCK_TIMEOUT_S):
        # The tracking store's constructor builds every table, the model registry's included, and MLflow's
        # Default experiment; it caches its engine per URI, so the caller's MlflowClient reuses it.
        SqlAlchemyStore(tracking_uri, artifact_root or db.parent.joinpath("mlartifacts").as_uri())
