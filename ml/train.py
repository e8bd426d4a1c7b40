"""Training: data -> chronological split -> scaler -> one plain loop -> test metrics -> MLflow registry.

Read top to bottom: `TrainConfig`, the data preparation (`prepare`), the loop (`fit`), then the two entry
points `train_parent` (^GSPC) and `train_child` (freeze / fine_tune / scratch on top of the parent).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view

from ml.errors import Cancelled, CorruptModel, InsufficientHistory, InvalidInput, ModelNotFound, Paused
from ml.evaluate import evaluate
from ml.features import MODEL_FEATURES
from ml.model import ModelSpec, QuantileLSTM, pinball_loss, predict_log_returns
from ml.scaler import Scaler
from ml.tickers import INDEX_TICKER, PARENT_NAME, child_name, validate_ticker

if TYPE_CHECKING:  # the adapters arrive as arguments: the loop imports neither Feast nor MLflow
    from ml.feature_store import FeatureStore
    from ml.registry import LoadedModel, ModelRegistry, TrainingRun

log = logging.getLogger(__name__)

STRATEGIES = ("freeze", "fine_tune", "scratch")
# Fine-tuning starts from weights that already fit: a full learning rate would mostly undo the transfer.
FINE_TUNE_LR_FACTOR = 0.1
EVAL_FRACTION = 0.15  # of the usable samples, for each of val and test
MIN_TRAIN_SAMPLES = 40
MIN_EVAL_SAMPLES = 10
CHAMPION_METRIC = "mase_persistence_mean"  # lower is better
_GRAD_CLIP = 1.0
_EVAL_BATCH = 1024

EpochCallback = Callable[[int, int, float, float], None]
StopCallback = Callable[[], bool]


@dataclass
class TrainConfig:
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    patience: int = 5
    seed: int = 1337
    history_days: int | None = None  # train on only the last N calendar days of the data
    window: int = 60
    horizon: int = 7
    device: str | None = None  # None: CUDA when available, else CPU
    until: date | None = None  # ignore data after this date (lets a parent stop before a child's period)

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("epochs", _int_in(self.epochs, 1, 500), "an integer in 1..500"),
            ("lr", _float_in(self.lr, 1e-6, 1.0), "a number in [1e-6, 1]"),
            ("batch_size", _int_in(self.batch_size, 1, 4096), "an integer in 1..4096"),
            ("hidden", _int_in(self.hidden, 1, 1024), "an integer in 1..1024"),
            ("layers", _int_in(self.layers, 1, 8), "an integer in 1..8"),
            ("dropout", _float_in(self.dropout, 0.0, 0.9), "a number in [0, 0.9]"),
            ("patience", _int_in(self.patience, 1, 500), "an integer in 1..500"),
            ("seed", _int_in(self.seed, 0, 2**63 - 1), "a non-negative integer"),
            ("window", _int_in(self.window, 10, 250), "an integer in 10..250"),
            ("horizon", _int_in(self.horizon, 7, 30), "an integer in 7..30"),
        ]
        if self.history_days is not None:
            checks.append(("history_days", _int_in(self.history_days, 1, 100_000), "a positive integer"))
        if self.until is not None:
            checks.append(("until", isinstance(self.until, date), "a date"))
        for name, ok, expected in checks:
            if not ok:
                raise InvalidInput(f"{name} must be {expected}, got {getattr(self, name)!r}")


def _int_in(value: object, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _float_in(value: object, lo: float, hi: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi


def resolve_device(requested: str | None) -> torch.device:
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise InvalidInput(f"unknown device {requested!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device 'cuda' requested but CUDA is not available on this worker")
    return device


# -- data -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """Every (window -> next `horizon` log returns) sample of one ticker, in date order."""

    ticker: str
    dates: pd.DatetimeIndex  # one per feature row
    features: np.ndarray  # (rows, features) raw
    windows: np.ndarray  # (samples, window, features) raw, a view into `features`
    targets: np.ndarray  # (samples, horizon) log return from the window's last close
    window: int

    def sample_date(self, i: int) -> str:
        """The decision day of sample i: the last day of its window."""
        return self.dates[i + self.window - 1].date().isoformat()


@dataclass(frozen=True)
class Split:
    train: slice
    val: slice
    test: slice
    purge: int  # samples dropped between consecutive splits

    def ranges(self, data: Dataset) -> dict[str, Any]:
        out: dict[str, Any] = {
            part: [data.sample_date(s.start), data.sample_date(s.stop - 1)]
            for part, s in (("train", self.train), ("val", self.val), ("test", self.test))
        }
        return {**out, "purge_days": self.purge}


def min_rows(window: int, horizon: int) -> int:
    return window + horizon - 1 + 2 * horizon + MIN_TRAIN_SAMPLES + 2 * MIN_EVAL_SAMPLES


def load_dataset(store: FeatureStore, ticker: str, config: TrainConfig, spec: ModelSpec) -> Dataset:
    frame = store.training_frame(ticker, end=config.until)
    if config.history_days is not None:
        frame = frame[frame.index > frame.index[-1] - pd.Timedelta(days=config.history_days)]
    needed = min_rows(spec.window, spec.horizon)
    if len(frame) < needed:
        limit = f" in the last {config.history_days} days" if config.history_days else ""
        raise InsufficientHistory(
            f"{ticker}: need at least {needed} trading days of complete features (window {spec.window}, "
            f"horizon {spec.horizon}, purge gaps and {MIN_TRAIN_SAMPLES + 2 * MIN_EVAL_SAMPLES} samples), "
            f"have {len(frame)}{limit}"
        )
    features = frame[MODEL_FEATURES].to_numpy(dtype=np.float64)
    close = frame["close"].to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(features).all(axis=1) & (close > 0))
    if bad.any():
        raise InvalidInput(
            f"{ticker}: non-finite features or a non-positive close on {frame.index[bad][0].date()}: "
            "check the source data and ingest it again"
        )
    log_close = np.log(close)
    n_samples = len(frame) - spec.window - spec.horizon + 1
    ends = np.arange(n_samples) + spec.window - 1  # row index of each window's last day
    steps = np.arange(1, spec.horizon + 1)
    targets = log_close[ends[:, None] + steps[None, :]] - log_close[ends][:, None]
    windows = sliding_window_view(features, spec.window, axis=0)[:n_samples].transpose(0, 2, 1)
    return Dataset(ticker, frame.index, features, windows, targets, spec.window)


def chronological_split(n_samples: int, horizon: int) -> Split:
    """Train / val / test in date order with `horizon` samples purged between them.

    The purge makes the last train target (horizon days ahead) end before the first val decision day,
    so no training label overlaps a later split's labels.
    """
    usable = n_samples - 2 * horizon
    n_eval = max(MIN_EVAL_SAMPLES, round(usable * EVAL_FRACTION))
    n_train = usable - 2 * n_eval
    if n_train < MIN_TRAIN_SAMPLES:
        raise InsufficientHistory(
            f"{n_samples} samples leave {n_train} for training, need {MIN_TRAIN_SAMPLES}"
        )
    val_start = n_train + horizon
    test_start = val_start + n_eval + horizon
    return Split(
        slice(0, n_train), slice(val_start, val_start + n_eval), slice(test_start, n_samples), horizon
    )


def fit_scaler(data: Dataset, split: Split) -> Scaler:
    """Statistics from the rows the train windows read and the train targets, nothing later."""
    last_row = split.train.stop - 1 + data.window - 1
    return Scaler.fit(
        data.features[: last_row + 1],
        data.targets[split.train],
        feature_names=MODEL_FEATURES,
        fit_start=data.dates[0].date().isoformat(),
        fit_end=data.dates[last_row].date().isoformat(),
    )


@dataclass(frozen=True)
class Tensors:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def make_tensors(data: Dataset, split: Split, scaler: Scaler, device: torch.device) -> Tensors:
    scale = np.asarray(scaler.target_scale)

    def part(s: slice) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(scaler.transform(data.windows[s]))
        y = torch.from_numpy((data.targets[s] / scale).astype(np.float32))
        return x.to(device), y.to(device)

    return Tensors(*part(split.train), *part(split.val))


@dataclass(frozen=True)
class Prepared:
    data: Dataset
    split: Split
    scaler: Scaler
    tensors: Tensors


def prepare(
    store: FeatureStore, ticker: str, config: TrainConfig, spec: ModelSpec, device: torch.device
) -> Prepared:
    data = load_dataset(store, ticker, config, spec)
    split = chronological_split(len(data.targets), spec.horizon)
    scaler = fit_scaler(data, split)
    return Prepared(data, split, scaler, make_tensors(data, split, scaler, device))


# -- the loop ---------------------------------------------------------------------------------------
@dataclass
class FitResult:
    best_val_loss: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0  # 0: started at epoch 1


@dataclass
class Checkpointing:
    """Where `fit` leaves resumable state: `save` gets a plain dict of tensors and numbers (the adapter
    stores it, e.g. in the MLflow run); `resume` is such a dict from an interrupted attempt."""

    save: Callable[[dict[str, Any]], None]
    resume: dict[str, Any] | None = None
    every_s: float = 0.0  # 0: after every epoch


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def val_loss(model: QuantileLSTM, x: torch.Tensor, y: torch.Tensor, amp: torch.dtype | None) -> float:
    model.eval()
    total = torch.zeros((), device=x.device)
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        for start in range(0, len(x), _EVAL_BATCH):
            pred = model(x[start : start + _EVAL_BATCH]).float()
            total += pinball_loss(pred, y[start : start + _EVAL_BATCH]) * len(pred)
    return float(total) / len(x)


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


@dataclass
class _LoopState:
    """Everything an epoch boundary must carry over for a resumed run to continue bit for bit."""

    epoch: int = 0
    best: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    done: bool = False  # early stopping fired
    history: list[dict[str, float]] = field(default_factory=list)

    def snapshot(
        self,
        model: QuantileLSTM,
        optimizer: torch.optim.Optimizer,
        grad_scaler: Any,
        shuffle: torch.Generator,
    ) -> dict[str, Any]:
        cuda = torch.cuda.is_available() and next(model.parameters()).is_cuda
        return {
            "epoch": self.epoch,
            "best": self.best,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "done": self.done,
            "history": self.history,
            "model": _cpu(model.state_dict()),
            "optimizer": optimizer.state_dict(),
            "grad_scaler": grad_scaler.state_dict(),
            "shuffle_rng": shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if cuda else None,
        }

    @classmethod
    def restore(
        cls,
        ckpt: dict[str, Any],
        model: QuantileLSTM,
        optimizer: torch.optim.Optimizer,
        grad_scaler: Any,
        shuffle: torch.Generator,
    ) -> _LoopState:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt["grad_scaler"]:
                grad_scaler.load_state_dict(ckpt["grad_scaler"])
            shuffle.set_state(ckpt["shuffle_rng"])
            torch.set_rng_state(ckpt["torch_rng"])
            if ckpt.get("cuda_rng") is not None and next(model.parameters()).is_cuda:
                torch.cuda.set_rng_state(ckpt["cuda_rng"])
            return cls(
                int(ckpt["epoch"]),
                float(ckpt["best"]),
                ckpt["best_state"],
                int(ckpt["bad_epochs"]),
                bool(ckpt["done"]),
                list(ckpt["history"]),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CorruptModel(f"training checkpoint does not fit this model: {exc}") from exc


def fit(
    model: QuantileLSTM,
    tensors: Tensors,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    patience: int,
    seed: int,
    freeze_lstm: bool = False,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCallback | None = None,
    should_pause: StopCallback | None = None,
    log_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpointing: Checkpointing | None = None,
) -> FitResult:
    """Adam on the pinball loss with early stopping on val loss; leaves the best epoch's weights loaded.

    With `checkpointing`, state is saved at epoch boundaries and a `resume` state continues where it
    stopped. `should_pause` (asked after each epoch) saves a checkpoint and raises Paused: the caller
    hands the job on (preemption, a lost lease) instead of finishing it here.
    """
    device = tensors.x_train.device
    amp = autocast_dtype(device)
    grad_scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    shuffle = torch.Generator().manual_seed(seed)
    state = _LoopState()
    resumed = checkpointing.resume if checkpointing is not None else None
    if resumed is not None:
        state = _LoopState.restore(resumed, model, optimizer, grad_scaler, shuffle)
    resumed_from = state.epoch
    last_save, saved_epoch = time.monotonic(), state.epoch

    def save() -> None:
        nonlocal last_save, saved_epoch
        if checkpointing is not None:
            checkpointing.save(state.snapshot(model, optimizer, grad_scaler, shuffle))
            last_save, saved_epoch = time.monotonic(), state.epoch

    n = len(tensors.x_train)
    for epoch in range(state.epoch + 1, epochs + 1):
        if state.done:
            break
        if should_stop is not None and should_stop():
            raise Cancelled(f"training cancelled before epoch {epoch}; nothing registered")
        started = time.perf_counter()
        model.train()
        if freeze_lstm:
            model.lstm.eval()  # a frozen encoder is a fixed feature extractor: no dropout inside it
        train_total = torch.zeros((), device=device)
        for idx in torch.randperm(n, generator=shuffle).split(batch_size):
            idx = idx.to(device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                pred = model(tensors.x_train[idx])
            loss = pinball_loss(pred.float(), tensors.y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            grad_scaler.scale(loss).backward()
            grad_scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, _GRAD_CLIP)
            grad_scaler.step(optimizer)
            grad_scaler.update()
            train_total += loss.detach() * len(idx)
        train_loss = float(train_total) / n
        loss_val = val_loss(model, tensors.x_val, tensors.y_val, amp)
        seconds = time.perf_counter() - started
        state.epoch = epoch
        state.history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": loss_val, "seconds": seconds}
        )
        if loss_val < state.best:
            state.best, state.bad_epochs = loss_val, 0
            state.best_state = _cpu(model.state_dict())
        else:
            state.bad_epochs += 1
            state.done = state.bad_epochs >= patience
        # The checkpoint goes first: an epoch whose metrics are logged is never run again.
        if checkpointing is not None and time.monotonic() - last_save >= checkpointing.every_s:
            save()
        if log_epoch is not None:
            log_epoch(epoch, {"train_loss": train_loss, "val_loss": loss_val, "epoch_seconds": seconds})
        if on_epoch is not None:
            on_epoch(epoch, epochs, train_loss, loss_val)
        if should_pause is not None and epoch < epochs and not state.done and should_pause():
            if saved_epoch != epoch:
                save()
            raise Paused(epoch)
    if saved_epoch != state.epoch:
        save()  # a retry after this point registers from here instead of training again
    if state.best_state is None:
        raise InvalidInput("training diverged (no finite validation loss): lower the learning rate")
    model.load_state_dict(state.best_state)
    model.eval()
    return FitResult(state.best, state.epoch, state.history, resumed_from)


# -- entry points -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainHooks:
    """How a caller follows and steers a training; every field optional (a plain call trains to the end).

    `job_key` makes the training resumable and its side effects happen once: one MLflow run per
    (job_key, model), found again by a retry, which resumes from the run's checkpoint and registers no
    second version. `champion_lock(name)` serialises the champion decision and the alias move per model
    across processes (the caller brings the lock: ml knows no Redis).
    """

    on_epoch: EpochCallback | None = None
    should_stop: StopCallback | None = None  # cancel: raises Cancelled, nothing registered
    should_pause: StopCallback | None = None  # checkpoint, then raise Paused
    on_resume: Callable[[int], None] | None = None  # called with the checkpointed epoch
    job_key: str | None = None
    attempt: int | None = None  # tagged on the run: which delivery of the job last worked on it
    checkpoint_every_s: float = 0.0
    champion_lock: Callable[[str], AbstractContextManager[Any]] | None = None


@dataclass(frozen=True)
class _Job:
    name: str
    kind: str  # "parent" | "child"
    ticker: str
    strategy: str | None
    parent: LoadedModel | None


def train_parent(
    *, store: FeatureStore, registry: ModelRegistry, config: TrainConfig, hooks: TrainHooks | None = None
) -> dict[str, Any]:
    """Train the shared parent on ^GSPC, register it and promote it if it is not worse than the champion."""
    job = _Job(PARENT_NAME, "parent", INDEX_TICKER, None, None)
    return _train(job, store=store, registry=registry, config=config, hooks=hooks or TrainHooks())


def train_child(
    ticker: str,
    strategy: str,
    *,
    store: FeatureStore,
    registry: ModelRegistry,
    config: TrainConfig,
    train_parent_if_missing: bool = False,
    hooks: TrainHooks | None = None,
) -> dict[str, Any]:
    """A per-ticker model: `freeze` (parent LSTM fixed, head retrained), `fine_tune` (all layers at a lower
    learning rate) or `scratch` (parent architecture, random init: the baseline).

    freeze and fine_tune take the architecture (window, hidden, layers, dropout) from the parent champion.
    Without one they raise ModelNotFound, or first train the parent on its full history
    (`train_parent_if_missing=True`; the callbacks then see the parent's epochs before the child's).
    """
    hooks = hooks or TrainHooks()
    ticker = validate_ticker(ticker)
    if ticker == INDEX_TICKER:
        raise InvalidInput(f"{ticker} is the parent's own series: train it with train_parent")
    if strategy not in STRATEGIES:
        raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    parent = None
    if strategy != "scratch":
        if registry.champion_version(PARENT_NAME) is None:
            if not train_parent_if_missing:
                raise ModelNotFound(
                    f"strategy {strategy} needs a parent model and {PARENT_NAME} has no champion: train the "
                    "parent first (train_parent) or pass train_parent_if_missing=True"
                )
            train_parent(
                store=store, registry=registry, config=replace(config, history_days=None), hooks=hooks
            )
        parent = registry.load(PARENT_NAME)
    job = _Job(child_name(ticker), "child", ticker, strategy, parent)
    return _train(job, store=store, registry=registry, config=config, hooks=hooks)


def _spec(job: _Job, config: TrainConfig) -> ModelSpec:
    if job.parent is not None:
        return job.parent.model.spec
    return ModelSpec(
        len(MODEL_FEATURES), config.hidden, config.layers, config.dropout, config.window, config.horizon
    )


def _build_model(job: _Job, spec: ModelSpec, device: torch.device) -> QuantileLSTM:
    model = QuantileLSTM(spec)
    if job.parent is not None:
        model.load_state_dict(job.parent.model.state_dict())
    if job.strategy == "freeze":
        model.lstm.requires_grad_(False)
    return model.to(device)


def _train(
    job: _Job, *, store: FeatureStore, registry: ModelRegistry, config: TrainConfig, hooks: TrainHooks
) -> dict[str, Any]:
    started = time.perf_counter()
    device = resolve_device(config.device)
    spec = _spec(job, config)
    prep = prepare(store, job.ticker, config, spec, device)
    torch.manual_seed(config.seed)
    model = _build_model(job, spec, device)
    lr = config.lr * FINE_TUNE_LR_FACTOR if job.strategy == "fine_tune" else config.lr
    parent_version = job.parent.version if job.parent else None
    params = {
        **{k: v for k, v in asdict(config).items() if k != "device"},
        **spec.to_dict(),
        "kind": job.kind,
        "ticker": job.ticker,
        "strategy": job.strategy,
        "parent_version": parent_version,
        "effective_lr": lr,
        "device": str(device),
        "samples_train_val_test": "/".join(
            str(s.stop - s.start) for s in (prep.split.train, prep.split.val, prep.split.test)
        ),
    }
    run_name = f"{job.name}-{job.strategy or 'parent'}"
    tags = {
        "stockq.kind": job.kind,
        "stockq.ticker": job.ticker,
        "stockq.strategy": str(job.strategy),
        "stockq.model": job.name,
    }
    if hooks.attempt is not None:
        tags["stockq.attempt"] = str(hooks.attempt)
    with registry.training_run(run_name, params, tags, job_key=hooks.job_key) as run:
        resume = run.load_checkpoint() if hooks.job_key else None
        if resume is not None and hooks.on_resume is not None:
            hooks.on_resume(int(resume["epoch"]))
        checkpointing = Checkpointing(run.save_checkpoint, resume, hooks.checkpoint_every_s)
        fitted = fit(
            model,
            prep.tensors,
            epochs=config.epochs,
            lr=lr,
            batch_size=config.batch_size,
            patience=config.patience,
            seed=config.seed,
            freeze_lstm=job.strategy == "freeze",
            on_epoch=hooks.on_epoch,
            should_stop=hooks.should_stop,
            should_pause=hooks.should_pause,
            log_epoch=run.log_epoch,
            checkpointing=checkpointing if hooks.job_key else None,
        )
        if hooks.should_stop is not None and hooks.should_stop():
            raise Cancelled(f"training cancelled after {fitted.epochs_run} epochs; nothing registered")
        summary = _finish(job, run, prep, model, fitted, registry, parent_version, hooks)
    log.info("trained %s v%s: %s", summary["name"], summary["version"], summary["decision"])
    return {
        **summary,
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 3),
        "history": fitted.history,
        "resumed_from_epoch": fitted.resumed_from_epoch,
    }


def _finish(
    job: _Job,
    run: TrainingRun,
    prep: Prepared,
    model: QuantileLSTM,
    fitted: FitResult,
    registry: ModelRegistry,
    parent_version: str | None,
    hooks: TrainHooks,
) -> dict[str, Any]:
    """Test metrics, registration (once per run), then the champion decision under the model's lock."""
    x_test, y_test = prep.data.windows[prep.split.test], prep.data.targets[prep.split.test]
    drift = float(prep.data.targets[prep.split.train, 0].mean())
    test = evaluate(y_test, predict_log_returns(model, prep.scaler, x_test), drift_per_day=drift)
    run.log_metrics(
        {f"test_{k}": v for k, v in test.items() if k != "per_horizon"}
        | {
            f"test_h{r['horizon']}_{k}": v
            for r in test["per_horizon"]
            for k, v in r.items()
            if k != "horizon"
        }
        | {"best_val_loss": fitted.best_val_loss, "epochs_run": fitted.epochs_run}
    )
    card = {
        "name": job.name,
        "kind": job.kind,
        "strategy": job.strategy,
        "ticker": job.ticker,
        "parent_version": parent_version,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "window": model.spec.window,
        "horizon": model.spec.horizon,
        "features": list(MODEL_FEATURES),
        "split": prep.split.ranges(prep.data),
        "epochs_run": fitted.epochs_run,
        "best_val_loss": fitted.best_val_loss,
        "test": test,
        "architecture": model.spec.to_dict(),
        "scaler_fit": [prep.scaler.fit_start, prep.scaler.fit_end],
    }
    version_tags = {"kind": job.kind, "strategy": str(job.strategy), "ticker": job.ticker}
    version = run.register(job.name, model, prep.scaler, card, version_tags)
    promote, decision = registry.promote(
        job.name,
        version,
        lambda current: _champion_decision(registry, job.name, current, test, x_test, y_test, drift),
        hooks.champion_lock(job.name) if hooks.champion_lock is not None else None,
    )
    run.log_card({**card, "version": version, "champion_decision": decision})
    run.set_tags({"stockq.champion": str(promote).lower(), "stockq.decision": decision})
    return {
        "name": job.name,
        "version": version,
        "run_id": run.run_id,
        "kind": job.kind,
        "strategy": job.strategy,
        "ticker": job.ticker,
        "parent_version": parent_version,
        "epochs_run": fitted.epochs_run,
        "best_val_loss": fitted.best_val_loss,
        "test": test,
        "champion": promote,
        "decision": decision,
    }


def _champion_decision(
    registry: ModelRegistry,
    name: str,
    current: str | None,
    test: dict[str, Any],
    x_test: np.ndarray,
    y_test: np.ndarray,
    drift: float,
) -> tuple[bool, str]:
    """Promote unless the current champion is better on CHAMPION_METRIC.

    Where the architectures allow, the champion is re-scored on the candidate's own test windows, since
    two test periods are not comparable; its score from its own card is the fallback.
    """
    if current is None:
        return True, f"promoted: first champion of {name}"
    try:
        champion = registry.load(name, current)
    except CorruptModel as exc:
        return True, f"promoted: champion v{current} cannot be loaded ({exc.message})"
    spec = champion.model.spec
    if spec.window <= x_test.shape[1] and spec.horizon == y_test.shape[1]:
        pred = predict_log_returns(champion.model, champion.scaler, x_test)
        old = float(evaluate(y_test, pred, drift_per_day=drift)[CHAMPION_METRIC])
        basis = "on the same test windows"
    else:
        old = float(champion.card["test"][CHAMPION_METRIC])
        basis = "on its own test period (shapes differ)"
    new = float(test[CHAMPION_METRIC])
    if new <= old:
        return True, f"promoted: test {CHAMPION_METRIC} {new:.4f} <= champion v{current}'s {old:.4f} {basis}"
    return False, f"kept champion v{current}: test {CHAMPION_METRIC} {new:.4f} > its {old:.4f} {basis}"
