"""The job record's `progress` (contract C1): what a person reads about the phase a job is in.

`Progress` builds each value the record stores; it does no I/O (workers/job_context.py writes what it
returns, one write per epoch or step). Every value carries `phase` (a machine id), `label` (the sentence a
person reads), `step` / `steps` (the phase's own bar, never going back within the phase) and
`phase_index` / `phases` (where the phase sits among the job's phases, a list that grows when a parent
must be trained first). A training epoch adds `epoch`, `epochs`, `loss`, `val_loss` and `epoch_seconds`;
`losses` keeps every epoch of every training phase of the job, capped, across its attempts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

LOSSES_CAP = 500  # the record is rewritten every epoch: the oldest epochs go first
PARENT_PREFIX = "parent_"  # the parent a child job trains first: parent_select, parent_refit
TRAINING_PHASES = ("select", "refit", "parent_select", "parent_refit")
# Where a phase the job did not plan for (the parent a child turns out to need) goes: before these.
_BEFORE = {"parent_select": "select", "parent_refit": "select", "waiting_for_parent": "select"}


def sig6(value: float | None) -> float | None:
    """Six significant digits keep the record small; NaN and infinities (a diverged loss) become null."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _title(phase: str) -> str:
    """How a label names a training phase: `select`, or `parent: select` for the parent's."""
    if phase.startswith(PARENT_PREFIX):
        return f"parent: {phase.removeprefix(PARENT_PREFIX)}"
    return phase


def epoch_label(phase: str, epoch: int, epochs: int, *, resumed: bool = False) -> str:
    text = f"{_title(phase)} epoch {epoch}/{epochs}"
    if phase.endswith("refit"):
        # The refit runs the epoch count the selection's early stop chose, not the count asked for.
        text += " (epochs from the selection's early stop)"
    return text + (" (resumed from a checkpoint)" if resumed else "")


def phase_start_label(phase: str, epochs: int) -> str:
    if phase.endswith("refit") and epochs == 0:
        return f"{_title(phase)}: no epochs (the starting weights beat every epoch of the selection)"
    if phase.endswith("select"):
        return f"{_title(phase)}: up to {epochs} epochs, early stopping on the validation days"
    return epoch_label(phase, 0, epochs)


@dataclass
class Progress:
    planned: list[str]
    losses: list[dict[str, Any]] = field(default_factory=list)
    current: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def carried_over(cls, previous: dict[str, Any] | None, planned: list[str]) -> Progress:
        """A new attempt keeps the earlier attempts' losses (a resumed training continues them)."""
        losses = (previous or {}).get("losses")
        return cls(list(planned), list(losses) if isinstance(losses, list) else [])

    @property
    def phase(self) -> str | None:
        return self.current.get("phase")

    def expect(self, *phases: str) -> None:
        """Phases this job turns out to need, in order, before the phase they precede (a child's parent
        training goes before its own selection), else after the current phase."""
        for phase in phases:
            if phase in self.planned:
                continue
            before = _BEFORE.get(phase)
            if before in self.planned:
                self.planned.insert(self.planned.index(before), phase)
            else:
                at = self.planned.index(self.phase) + 1 if self.phase in self.planned else len(self.planned)
                self.planned.insert(at, phase)

    def enter(self, phase: str, label: str, *, steps: int = 1, step: int = 0, **extra: Any) -> dict[str, Any]:
        """A phase begins (or begins again in a later attempt): its bar starts at `step`."""
        self.expect(phase)
        self.current = {
            "phase": phase,
            "label": label,
            "step": max(0, min(step, steps)),
            "steps": max(1, steps),
            "phase_index": self.planned.index(phase) + 1,
            "phases": len(self.planned),
        }
        return self._value(extra)

    def advance(self, step: int, label: str, **extra: Any) -> dict[str, Any]:
        """The current phase moves on; its step never goes back (a late or repeated report keeps it)."""
        self.current = {**self._base(), "label": label,
                        "step": min(max(step, self.current["step"]), self.current["steps"])}  # fmt: skip
        return self._value(extra)

    def training_phase(self, phase: str, epochs: int) -> dict[str, Any]:
        done = 1 if phase.endswith("refit") and epochs == 0 else 0  # nothing to run: the bar is full
        return self.enter(phase, phase_start_label(phase, epochs), steps=max(epochs, 1), step=done)

    def resumed(self, epoch: int) -> dict[str, Any]:
        """A checkpoint brought this phase back at `epoch`: the bar continues from there."""
        phase = self.current["phase"]
        return self.advance(epoch, epoch_label(phase, epoch, self.current["steps"], resumed=True))

    def epoch(self, epoch: int, epochs: int, loss: float, val_loss: float, seconds: float) -> dict[str, Any]:
        phase = self.current["phase"]
        # A phase run again from an earlier epoch (a retry without a checkpoint) replaces those epochs.
        kept = [r for r in self.losses if not (r.get("phase") == phase and r.get("epoch", 0) >= epoch)]
        kept.append({"phase": phase, "epoch": epoch, "loss": sig6(loss), "val_loss": sig6(val_loss)})
        self.losses = kept[-LOSSES_CAP:]
        self.current["steps"] = max(1, epochs)
        extra = {"epoch": epoch, "epochs": epochs, "loss": sig6(loss), "val_loss": sig6(val_loss),
                 "epoch_seconds": sig6(seconds)}  # fmt: skip
        return self.advance(epoch, epoch_label(phase, epoch, epochs), **extra)

    def _base(self) -> dict[str, Any]:
        keys = ("phase", "label", "step", "steps", "phase_index", "phases")
        return {k: self.current[k] for k in keys}

    def _value(self, extra: dict[str, Any]) -> dict[str, Any]:
        self.current = {**self._base(), **extra}
        return {**self.current, "losses": self.losses}
