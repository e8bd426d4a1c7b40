"""Model registry on MLflow: training runs, registered versions, the `champion` alias, safe loading.

Every call goes through an MlflowClient bound to this registry's tracking URI (never the process-global
one), so two registries with different stores can live in one process. Artifacts are always fetched
through the client from the artifact store, never from a local path, so a worker on another host finds
them. Registered names: `stockq-parent` and `stockq-child-<TICKER>` with the validated ticker as is
(MLflow names may hold every character a ticker can: only `/` and `:` are refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from ml.errors import Cancelled, CorruptModel, InvalidInput, ModelNotFound
from ml.model.scaler import Scaler
from ml.model.vol_lstm import VolQuantileLSTM, VolSpec
from ml.registry.cards import latest_evaluation, with_evaluation
from ml.registry.names import (
    CARD_FILE,
    CHAMPION,
    DECISION_TAG,
    EVALUATION_FILE,
    EVALUATIONS,
    EXPERIMENT,
    JOB_TAG,
    MODEL_DIR,
    RECIPE_TAG,
    RECORD_TAG,
    UNIVERSE_TAG,
)
from ml.tickers import PARENT_NAME

# MLflow decides on telemetry when it is imported, so this must precede the import. Workers log, they have
# no terminal for download progress bars.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

WEIGHTS_FILE = "state_dict.pt"
SCALER_FILE = "scaler.json"
SHA_TAG = "stockq.weights_sha256"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "checkpoint.pt"
# Per-epoch metrics are buffered and sent at most this often: one sqlite write per epoch would cost more
# than a small child's whole epoch.
_FLUSH_S = 5.0
_BATCH_LIMIT = 1000  # MLflow's cap on metrics per log_batch call
_REMOTE_SCHEMES = frozenset({"http", "https", "databricks"})


@dataclass
class LoadedModel:
    name: str
    version: str
    model: VolQuantileLSTM
    scaler: Scaler
    card: dict[str, Any]  # with the latest evaluation of its recipe (ml.registry.cards.with_evaluation)
    kind: str  # "parent" | "child"
    strategy: str | None


def _error_code(exc: MlflowException) -> str:
    return str(getattr(exc, "error_code", ""))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from disk, refusing anything but plain tensors (no pickled code ever runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise CorruptModel(f"weights file {path.name} is not a valid state_dict: {exc}") from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CorruptModel(f"weights file {path.name} does not hold a state_dict of tensors")
    return state


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TrainingRun:
    """One open MLflow run: buffered per-epoch metrics, then artifacts and a registered version."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        stamp = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), stamp, epoch) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= _FLUSH_S:
            self.flush()

    def log_metrics(self, metrics: dict[str, float]) -> None:
        stamp = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), stamp, 0) for k, v in metrics.items()]
        self.flush()

    def flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending[:_BATCH_LIMIT], self._pending[_BATCH_LIMIT:]
            self.client.log_batch(self.run_id, metrics=chunk)
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def registered_version(self) -> str | None:
        """The version this run registered already (a retried job registers nothing new)."""
        found = self.client.search_model_versions(f"run_id = '{self.run_id}'")
        return str(found[0].version) if found else None

    def register(
        self, name: str, model: nn.Module, scaler: Scaler, card: dict[str, Any], tags: dict[str, str]
    ) -> str:
        """Log weights + scaler and register a new version of `name` (once per run: a retry after the
        version was created returns it), then log the card carrying that version."""
        existing = self.registered_version()
        if existing is not None:
            self.log_card({**card, "version": existing})
            return existing
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / WEIGHTS_FILE
            torch.save(state, weights)
            (Path(tmp) / SCALER_FILE).write_text(scaler.to_json())
            sha = _sha256(weights)
            self.client.log_artifacts(self.run_id, tmp, MODEL_DIR)
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:  # it exists, perhaps created by another worker a moment ago
            if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{MODEL_DIR}"
        version = self.client.create_model_version(
            name, source, run_id=self.run_id, tags={**tags, SHA_TAG: sha}
        ).version
        self.log_card({**card, "version": str(version)})
        self.set_tags({SHA_TAG: sha, "stockq.registered": f"{name}/{version}"})
        return str(version)

    def log_json(self, value: dict[str, Any], name: str) -> None:
        """A JSON artifact of this run (e.g. a finished phase, so a retried job does not run it again)."""
        self.client.log_text(self.run_id, json.dumps(value), name)

    def load_json(self, name: str) -> dict[str, Any] | None:
        if not any(a.path == name for a in self.client.list_artifacts(self.run_id)):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(self.client.download_artifacts(self.run_id, name, tmp))
            try:
                return dict(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                raise CorruptModel(f"{name} of run {self.run_id} is unreadable: {exc}") from exc

    def log_card(self, card: dict[str, Any]) -> None:
        self.client.log_text(self.run_id, json.dumps(card, indent=1), f"{MODEL_DIR}/{CARD_FILE}")

    # -- checkpoints: in the run's artifact store, so a worker on another host resumes from them ----------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / CHECKPOINT_FILE
            torch.save(state, path)
            self.client.log_artifact(self.run_id, str(path), CHECKPOINT_DIR)
        # Metrics follow their checkpoint: an epoch whose metrics were sent is never trained again.
        self.flush()

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint of this run (None when it has none), its unsent epoch metrics re-sent (under
        the checkpoint's `metric_prefix`, when it has one)."""
        if not any(
            a.path.endswith(CHECKPOINT_FILE) for a in self.client.list_artifacts(self.run_id, CHECKPOINT_DIR)
        ):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(
                self.client.download_artifacts(self.run_id, f"{CHECKPOINT_DIR}/{CHECKPOINT_FILE}", tmp)
            )
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # torch raises several unrelated types for a bad file
                raise CorruptModel(f"checkpoint of run {self.run_id} is unreadable: {exc}") from exc
        if not isinstance(state, dict) or "epoch" not in state:
            raise CorruptModel(f"checkpoint of run {self.run_id} is not a training checkpoint")
        prefix = str(state.get("metric_prefix", ""))
        logged = {m.step for m in self.client.get_metric_history(self.run_id, f"{prefix}train_loss")}
        for row in state.get("history", []):
            if row["epoch"] not in logged:
                metrics = {
                    "train_loss": row["train_loss"],
                    "val_loss": row["val_loss"],
                    "epoch_seconds": row["seconds"],
                }
                self.log_epoch(row["epoch"], {prefix + k: v for k, v in metrics.items()})
        self.flush()
        return state


class ModelRegistry:
    def __init__(self, tracking_uri: str, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        from ml.registry.mlflow_store import ensure_tracking_store  # schema built once across processes

        ensure_tracking_store(tracking_uri, artifact_root)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_ids: dict[str, str] = {}

    # -- training side ---------------------------------------------------------------------------
    def experiment_id(self, name: str = EXPERIMENT) -> str:
        if name not in self._experiment_ids:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                # A local store (sqlite/file) gets the caller's artifact root so nothing lands in ./mlruns;
                # a tracking server chooses its own artifact store, reachable from every host.
                local = urlparse(self.tracking_uri).scheme not in _REMOTE_SCHEMES
                location = self.artifact_root if local else None
                if location is not None and name != EXPERIMENT:
                    location = f"{location.rstrip('/')}/{name}"
                try:
                    self._experiment_ids[name] = self.client.create_experiment(
                        name, artifact_location=location
                    )
                except MlflowException as exc:
                    if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                        raise
                    self._experiment_ids[name] = self.client.get_experiment_by_name(name).experiment_id
            else:
                self._experiment_ids[name] = found.experiment_id
        return self._experiment_ids[name]

    # -- evaluations -------------------------------------------------------------------------------
    def record_evaluation(self, summary: dict[str, Any], files: dict[str, Path]) -> str:
        """An evaluation as a finished run of the `stockq-evaluations` experiment, tagged with its recipe
        and universe: the summary as `evaluation.json` (with the run's id in it), `files` as artifacts
        under their names. Returns the run id."""
        tags = {RECIPE_TAG: str(summary["recipe"]), UNIVERSE_TAG: str(summary["universe"])}
        run_id = self.client.create_run(
            self.experiment_id(EVALUATIONS),
            run_name=f"evaluate-{tags[RECIPE_TAG]}-{tags[UNIVERSE_TAG]}",
            tags=tags,
        ).info.run_id
        status = RunStatus.FAILED
        try:
            self.client.log_text(run_id, json.dumps({**summary, "run_id": run_id}, indent=1), EVALUATION_FILE)
            with tempfile.TemporaryDirectory() as tmp:
                for name, path in files.items():
                    copy = Path(tmp) / name
                    copy.write_bytes(Path(path).read_bytes())
                    self.client.log_artifact(run_id, str(copy))
            status = RunStatus.FINISHED
        finally:
            self.client.set_terminated(run_id, RunStatus.to_string(status))
        return run_id

    def latest_evaluation(self, recipe: str, universe: str) -> dict[str, Any] | None:
        """The newest recorded evaluation of (recipe, universe), or None."""
        return latest_evaluation(self.client, recipe, universe)

    @contextlib.contextmanager
    def training_run(
        self, run_name: str, params: dict[str, object], tags: dict[str, str], job_key: str | None = None
    ) -> Iterator[TrainingRun]:
        """An MLflow run that ends FINISHED, KILLED (cancelled) or FAILED with the block.

        With `job_key`, the run of an earlier attempt of the same job and model is reopened instead of
        starting another one (its params are already logged)."""
        run_id = self._run_of(job_key, tags.get("stockq.model", "")) if job_key else None
        if run_id is None:
            run_tags = {**tags, JOB_TAG: job_key} if job_key else tags
            run_id = self.client.create_run(
                self.experiment_id(), run_name=run_name, tags=run_tags
            ).info.run_id
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        else:
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            if "stockq.attempt" in tags:
                self.client.set_tag(run_id, "stockq.attempt", tags["stockq.attempt"])
        run = TrainingRun(self.client, run_id)
        status = RunStatus.FAILED
        try:
            yield run
            status = RunStatus.FINISHED
        except Cancelled:
            status = RunStatus.KILLED
            raise
        finally:
            run.flush()
            self.client.set_terminated(run_id, RunStatus.to_string(status))

    def _run_of(self, job_key: str, model: str) -> str | None:
        found = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{JOB_TAG}` = '{job_key}' and tags.`stockq.model` = '{model}'",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def promote(
        self,
        name: str,
        version: str,
        decide: Callable[[str | None], tuple[bool, str]],
        lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> tuple[bool, str]:
        """Decide and move the champion alias as one step under `lock` (per model, held by the caller's
        process group), with a compare-and-set on the champion the decision looked at: two trainings
        finishing together cannot leave the worse one champion because it finished last."""
        with lock or contextlib.nullcontext():
            current = self.champion_version(name)
            if current == version:  # a retry after the alias moved: the decision was recorded then
                tags = self.client.get_model_version(name, version).tags
                return True, tags.get(DECISION_TAG, f"promoted: v{version} is the champion")
            promote, decision = decide(current)
            if promote:
                if self.champion_version(name) != current:
                    raise RuntimeError(f"champion of {name} moved during the decision: take a lock")
                self.client.set_registered_model_alias(name, CHAMPION, version)
            self.client.set_model_version_tag(name, version, DECISION_TAG, decision)
            return promote, decision

    def record_decision(self, name: str, version: str, record: dict[str, Any]) -> None:
        """The whole champion decision on the version, as JSON (read by ml.registry.versions)."""
        self.client.set_model_version_tag(name, version, RECORD_TAG, json.dumps(record))

    # -- serving side ----------------------------------------------------------------------------
    def _version(self, name: str, version: str | None) -> ModelVersion:
        if version is not None and not str(version).isdigit():
            raise InvalidInput(f"model version must be a positive integer, got {version!r}")
        try:
            if version is None:
                return self.client.get_model_version_by_alias(name, CHAMPION)
            return self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            if _error_code(exc) not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                raise
            what = f"version {version} of {name}" if version else f"a {CHAMPION} for {name}"
            hint = "train the parent first" if name == PARENT_NAME else "train this child first"
            raise ModelNotFound(f"the registry has no {what}: {hint}") from exc

    def champion_version(self, name: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException as exc:
            if _error_code(exc) not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                raise
            return None

    def set_champion(self, name: str, version: str) -> None:
        mv = self._version(name, version)
        self.client.set_registered_model_alias(name, CHAMPION, str(mv.version))

    def _download(self, mv: ModelVersion, path: str, dst: str) -> Path:
        try:
            return Path(self.client.download_artifacts(mv.run_id, path, dst))
        except (MlflowException, OSError) as exc:
            raise CorruptModel(f"artifacts of {mv.name} v{mv.version} cannot be read: {exc}") from exc

    def model_card(self, name: str, version: str) -> dict[str, Any]:
        """The stored card with the latest evaluation of its recipe and the verdict from it."""
        mv = self._version(name, version)
        with tempfile.TemporaryDirectory() as tmp:
            card = _read_card(self._download(mv, f"{MODEL_DIR}/{CARD_FILE}", tmp), mv)
        return with_evaluation(card, self.client)

    def load(self, name: str, version: str | None = None, *, device: str | None = None) -> LoadedModel:
        """A registered version (None = the champion), in eval mode on `device` (default CPU)."""
        mv = self._version(name, version)
        label = f"{mv.name} v{mv.version}"
        with tempfile.TemporaryDirectory() as tmp:
            folder = self._download(mv, MODEL_DIR, tmp)
            card = _read_card(folder / CARD_FILE, mv)
            try:
                scaler = Scaler.from_json((folder / SCALER_FILE).read_text())
                spec = VolSpec.from_dict(card["architecture"])
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise CorruptModel(f"{label}: scaler or architecture unreadable: {exc}") from exc
            weights = folder / WEIGHTS_FILE
            if not weights.is_file() or _sha256(weights) != mv.tags.get(SHA_TAG):
                raise CorruptModel(f"{label}: weights file missing or altered since registration (checksum)")
            state = load_weights(weights)
        if list(scaler.feature_names) != list(spec.inputs):
            raise CorruptModel(f"{label}: the scaler's inputs are not the model's")
        model = VolQuantileLSTM(spec)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CorruptModel(f"{label}: weights do not fit its architecture: {exc}") from exc
        model.to(torch.device(device or "cpu")).eval()
        return LoadedModel(
            name=mv.name,
            version=str(mv.version),
            model=model,
            scaler=scaler,
            card=with_evaluation(card, self.client),
            kind=str(card.get("kind")),
            strategy=card.get("strategy"),
        )


def _read_card(path: Path, mv: ModelVersion) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptModel(f"{mv.name} v{mv.version}: model card unreadable: {exc}") from exc
    if not isinstance(card, dict):
        raise CorruptModel(f"{mv.name} v{mv.version}: model card is not a JSON object")
    return card
