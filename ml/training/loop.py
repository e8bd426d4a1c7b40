"""The one training loop: Adam on the pinball loss, early stopping on the validation loss, AMP on CUDA,
checkpoints at epoch boundaries (resumable bit for bit), cancel and pause between epochs.

Everything that trains a model goes through `fit`: a registered training, each walk-forward origin and the
refit of a served model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ml.config import EpochCallback, StopCallback
from ml.errors import Cancelled, CorruptModel, InvalidInput, Paused
from ml.model.vol_lstm import pinball
from ml.training.dataprep import Tensors

_GRAD_CLIP = 1.0
_EVAL_BATCH = 1024


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


@dataclass
class FitResult:
    best_val_loss: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0  # 0: started at epoch 1
    best_epoch: int = 0  # 0: the starting weights (with keep_start) beat every epoch


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


def _forward(model: torch.nn.Module, x: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    return model(x) if ids is None else model(x, ids)


def val_loss(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    amp: torch.dtype | None,
    ids: torch.Tensor | None = None,
) -> float:
    model.eval()
    total = torch.zeros((), device=x.device)
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        for start in range(0, len(x), _EVAL_BATCH):
            part = slice(start, start + _EVAL_BATCH)
            pred = _forward(model, x[part], None if ids is None else ids[part]).float()
            total += pinball(pred, y[part], model.levels) * len(pred)
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
    best_epoch: int = 0

    def snapshot(
        self,
        model: torch.nn.Module,
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
            "best_epoch": self.best_epoch,
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
        model: torch.nn.Module,
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
                int(ckpt["best_epoch"]),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CorruptModel(f"training checkpoint does not fit this model: {exc}") from exc


def fit(
    model: torch.nn.Module,
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
    keep_start: bool = False,
) -> FitResult:
    """Adam on the pinball loss with early stopping on val loss; leaves the best epoch's weights loaded.

    `keep_start`: the starting weights compete too (epoch 0), so a training that only fits noise leaves
    the model where it started (zero+EWMA from scratch, the previous refit when warm-started) instead of
    keeping its least bad epoch.

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
    elif keep_start:
        state.best = val_loss(model, tensors.x_val, tensors.y_val, amp, tensors.ids_val)
        state.best_state = _cpu(model.state_dict())
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
                ids = None if tensors.ids_train is None else tensors.ids_train[idx]
                pred = _forward(model, tensors.x_train[idx], ids)
            loss = pinball(pred.float(), tensors.y_train[idx], model.levels)
            optimizer.zero_grad(set_to_none=True)
            grad_scaler.scale(loss).backward()
            grad_scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, _GRAD_CLIP)
            grad_scaler.step(optimizer)
            grad_scaler.update()
            train_total += loss.detach() * len(idx)
        train_loss = float(train_total) / n
        loss_val = val_loss(model, tensors.x_val, tensors.y_val, amp, tensors.ids_val)
        seconds = time.perf_counter() - started
        state.epoch = epoch
        state.history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": loss_val, "seconds": seconds}
        )
        if loss_val < state.best:
            state.best, state.bad_epochs, state.best_epoch = loss_val, 0, epoch
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
    return FitResult(state.best, state.epoch, state.history, resumed_from, state.best_epoch)
