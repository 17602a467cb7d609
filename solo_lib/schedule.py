"""The learning-rate schedule and the time budget that sizes it.

`LRSchedule` is the one schedule every run uses: a linear warm-up, then either
step decay (the paper's: x `gamma` at each milestone) or a cosine decay to 0 at the
last step. It is a per-step multiplier for `torch.optim.lr_scheduler.LambdaLR`, and
a plain object rather than a function, so that its fields are saved in
checkpoints and a resumed run continues the same curve.

`TimeBudget` makes a run fit a wall-clock budget instead of being cut short by it.
It times the first epoch (training and validation), then sets the number of epochs
that fit in the rest of the budget and stretches the schedule to it: the warm-up,
the decay and the end are then where the schedule puts them, on a fast or a slow
machine. The number of epochs it picked is printed, so that the run can be repeated
exactly with ``max_epochs`` and no budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pytorch_lightning as pl

SCHEDULES = ("step", "cosine")


@dataclass
class LRSchedule:
    """Learning-rate factor of step `step` (0-based): warm-up times decay.

    - warm-up: linear from `warmup_ratio` at step 0 to 1 at step `warmup_iters`;
    - "step": `gamma` ** (number of milestones reached), milestones in steps;
    - "cosine": (1 + cos(pi * step / total_steps)) / 2, from 1 down to 0 at `total_steps`.
    """

    total_steps: int
    kind: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"lr schedule must be one of {SCHEDULES}, got {self.kind!r}")
        self.milestones = tuple(int(m) for m in self.milestones)

    def __call__(self, step: int) -> float:
        warmup = 1.0
        if step < self.warmup_iters:
            warmup = self.warmup_ratio + (1 - self.warmup_ratio) * step / self.warmup_iters
        if self.kind == "cosine":
            progress = min(step / max(self.total_steps, 1), 1.0)
            return warmup * 0.5 * (1 + math.cos(math.pi * progress))
        return warmup * self.gamma ** sum(step >= m for m in self.milestones)

    def stretch(self, total_steps: int) -> None:
        """Rescale the schedule to `total_steps`: the milestones keep their fractions."""
        factor = total_steps / max(self.total_steps, 1)
        self.milestones = tuple(round(m * factor) for m in self.milestones)
        self.total_steps = int(total_steps)


class TimeBudget(pl.Callback):
    """Train as many whole epochs as fit in `minutes` of wall time, counted from now.

    After epoch 0 (its training and its validation) the number of epochs becomes
    ``1 + floor(time left / duration of epoch 0)``, at most `max_epochs`, and the
    module's `LRSchedule` is stretched to that many steps. Every later epoch end checks
    the plan again at the pace of the last `cycle` epochs, their mean duration: with
    mask AP on every `cycle`-th epoch only, epochs alternate between slow and fast, and
    the pace of one epoch alone would make the plan swing (15 and 21 epochs, measured),
    each swing bending the schedule. Epoch 0 leaves the window once `cycle` epochs
    follow it: it is slow (data generation, first-call overheads), so the run usually
    gains an epoch or two once the pace is known; should the machine slow down (other
    work starts), the run is shortened instead. Each change stretches the schedule
    again, so that it always ends at the last step, and is printed. The choice is saved
    in checkpoints: a resumed run keeps it.
    """

    def __init__(self, minutes: float, max_epochs: int, cycle: int = 1) -> None:
        if not minutes > 0:
            raise ValueError(f"time budget must be positive minutes, got {minutes}")
        if max_epochs < 1:
            raise ValueError(f"time budget: max_epochs must be >= 1, got {max_epochs}")
        if cycle < 1:
            raise ValueError(f"time budget: cycle must be >= 1, got {cycle}")
        self.minutes = float(minutes)
        self.max_epochs = int(max_epochs)
        self.cycle = int(cycle)
        self.start = time.monotonic()
        self.epoch_start: float | None = None
        self.durations: list[float] = []
        """Seconds of each epoch of this process (training and validation)."""
        self.epochs: int | None = None
        """The number of epochs chosen (None before the end of epoch 0)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epochs is not None:  # resumed from a checkpoint: keep the earlier choice
            trainer.fit_loop.max_epochs = self.epochs

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_start = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epoch_start is None:
            return
        now = time.monotonic()
        self.durations.append(now - self.epoch_start)
        left_s = self.minutes * 60 - (now - self.start)
        done = trainer.current_epoch + 1  # epochs finished, this one included
        # The window: the last `cycle` epochs, without epoch 0 once enough follow it.
        window = self.durations[1:] if len(self.durations) > self.cycle else self.durations
        window = window[-self.cycle :]
        pace_s = sum(window) / len(window)
        fit = max(done, min(self.max_epochs, done + math.floor(max(0.0, left_s) / pace_s)))
        if fit == self.epochs:
            return
        last = trainer.current_epoch
        took = (
            f"epoch {last} took {pace_s:.1f} s"
            if len(window) == 1
            else f"epochs {last - len(window) + 1}-{last} took {pace_s:.1f} s on average"
        )
        if self.epochs is None:
            reason = took
        elif fit < self.epochs:
            reason = f"the machine slowed down: {took}"
        else:
            reason = f"epochs got faster: {took}"
        self._set_epochs(trainer, fit)
        if trainer.is_global_zero:
            steps = trainer.num_training_batches
            print(
                f"time budget {self.minutes:g} min: {reason} ({steps} steps, "
                f"{pace_s / steps:.2f} s per step with validation); training {self.epochs} "
                f"epochs = {self.epochs * steps} steps. To repeat this run without the budget: "
                f"--model.config.max_epochs {self.epochs} --model.config.time_budget_min null",
                flush=True,
            )

    def _set_epochs(self, trainer: pl.Trainer, epochs: int) -> None:
        """Train `epochs` epochs in all and stretch every `LRSchedule` to end with them."""
        self.epochs = epochs
        trainer.fit_loop.max_epochs = epochs
        total_steps = epochs * trainer.num_training_batches
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            lambdas = getattr(scheduler, "lr_lambdas", [])
            if not lambdas or not all(isinstance(f, LRSchedule) for f in lambdas):
                continue
            for schedule in lambdas:
                schedule.stretch(total_steps)
            # The rate of the next step was set on the old curve: set it on the new one.
            for group, base, schedule in zip(
                scheduler.optimizer.param_groups, scheduler.base_lrs, lambdas, strict=True
            ):
                group["lr"] = base * schedule(scheduler.last_epoch)
            scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"minutes": self.minutes, "epochs": self.epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs = state_dict.get("epochs")
