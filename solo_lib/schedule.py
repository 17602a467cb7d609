"""The learning-rate schedule and the time budget that plans the run.

`LRSchedule` is the one schedule every run uses: a linear warm-up, then either
step decay (the paper's: x `gamma` at each milestone) or a cosine decay to 0 at the
last step. It is a per-step multiplier for `torch.optim.lr_scheduler.LambdaLR`, and
a plain object rather than a function, so that its fields are saved in
checkpoints and a resumed run continues the same curve. Steps are optimiser steps:
with gradient accumulation an epoch of B batches has ceil(B / accumulate) of them.

`TimeBudget` makes a run fit a wall-clock budget instead of being cut short by it.
It times the training and the validation of every epoch, then plans the number of
epochs that fit in what is left of the budget and stretches the schedule to end
with them: the warm-up, the decay and the end are then where the schedule puts
them, on a fast or a slow machine. The plan is one decision for the whole run: it
is saved in checkpoints with the training time spent, so that a resumed run goes
on with the time that is left, and under several processes rank 0 makes it and
every rank applies it. `maps_epoch` says which epochs compute mask AP, for the
module that computes it and for the plan that pays for it.
"""

from __future__ import annotations

import dataclasses
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

    ``total_steps=None`` is a run whose length is not known yet (a time budget before
    it has planned): the cosine holds at 1 until `stretch` gives it an end.
    """

    total_steps: int | None
    kind: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"lr schedule must be one of {SCHEDULES}, got {self.kind!r}")
        self.milestones = tuple(int(m) for m in self.milestones)
        if self.total_steps is None and self.milestones:
            raise ValueError("a step schedule with milestones needs total_steps (max_epochs)")

    def __call__(self, step: int) -> float:
        warmup = 1.0
        if step < self.warmup_iters:
            warmup = self.warmup_ratio + (1 - self.warmup_ratio) * step / self.warmup_iters
        if self.kind == "cosine":
            if self.total_steps is None:
                return warmup
            progress = min(step / max(self.total_steps, 1), 1.0)
            return warmup * 0.5 * (1 + math.cos(math.pi * progress))
        return warmup * self.gamma ** sum(step >= m for m in self.milestones)

    def stretch(self, total_steps: int, now: int = 0) -> None:
        """Rescale the schedule to `total_steps`: the milestones still ahead of step `now`
        keep their fractions of the run; those passed stay where they were (moving one
        back ahead would raise the rate again)."""
        if self.total_steps is not None:
            factor = total_steps / max(self.total_steps, 1)
            self.milestones = tuple(m if m <= now else round(m * factor) for m in self.milestones)
        self.total_steps = int(total_steps)


def optimizer_steps_per_epoch(trainer: pl.Trainer) -> int:
    """Optimiser steps in one training epoch: ceil(batches / accumulate_grad_batches).

    Lightning steps the optimiser after every `accumulate_grad_batches` batches and
    after the last batch of the epoch; the scheduler steps with it.
    """
    trainer.fit_loop.setup_data()  # num_training_batches, with limit_train_batches applied
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        raise ValueError("the schedule counts steps per epoch: the training loader needs a length")
    return max(math.ceil(batches / trainer.accumulate_grad_batches), 1)


def last_step_of(trainer: pl.Trainer, epochs: int, steps_per_epoch: int) -> int:
    """The optimiser step at which a run of `epochs` epochs in all ends, counted from
    where the run is: the steps taken, the rest of the current epoch, whole epochs after
    it. (Not ``epochs * steps_per_epoch``: a resumed run may take another number of steps
    per epoch than the run it resumes, with other devices or batches.)"""
    batches_done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    steps_done = min(math.ceil(batches_done / trainer.accumulate_grad_batches), steps_per_epoch)
    epochs_left = epochs - trainer.current_epoch
    return trainer.global_step + epochs_left * steps_per_epoch - steps_done


def end_schedule_at(
    trainer: pl.Trainer, total_steps: int, milestones: tuple[int, ...] | None = None
) -> bool:
    """Stretch every `LRSchedule` of `trainer` to end at optimiser step `total_steps`.

    The milestones keep their fractions of the run (a time budget's plan), or become
    `milestones` when given (a run resumed with another ``max_epochs``: milestones are
    epochs, wherever the run ends). The rate of the next step was set on the old curve:
    it is set again on the new one. Returns whether any schedule changed.
    """
    changed = False
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        lambdas = getattr(scheduler, "lr_lambdas", [])
        if not lambdas or not all(isinstance(f, LRSchedule) for f in lambdas):
            continue
        if all(
            schedule.total_steps == total_steps and milestones in (None, schedule.milestones)
            for schedule in lambdas
        ):
            continue
        changed = True
        for schedule in lambdas:
            schedule.stretch(total_steps, now=scheduler.last_epoch)
            if milestones is not None:
                schedule.milestones = tuple(milestones)
        for group, base, schedule in zip(
            scheduler.optimizer.param_groups, scheduler.base_lrs, lambdas, strict=True
        ):
            group["lr"] = base * schedule(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
    return changed


def maps_epoch(
    epoch: int, last_epoch: int | None, every: int, first_validation: bool = False
) -> bool:
    """Whether validation after training epoch `epoch` computes mask AP in a fit.

    Epochs 0, k, 2k, ... (k = `every`), the last epoch of the plan (`last_epoch`, None
    while there is none), so that a run always ends with the AP of its final weights,
    and the first validation of a process (`first_validation`), so that a resumed run
    has AP from its first validation on (a checkpoint callback that monitors it finds it).
    """
    return epoch % every == 0 or epoch == last_epoch or first_validation


@dataclass
class EpochTime:
    """Seconds of one epoch: its training batches and its validation."""

    epoch: int
    train_s: float
    val_s: float | None
    """None: not validated yet (the epoch being planned before its validation)."""
    mask_ap: bool
    """Whether the validation computed mask AP (a few times the cost of one without)."""
    first_of_process: bool
    """The first epoch a process trains pays one-off costs: it is left out of the pace."""


@dataclass
class EpochCosts:
    """The expected seconds of an epoch's training, and of its validation with and without AP."""

    train_s: float
    map_val_s: float
    plain_val_s: float

    @classmethod
    def from_history(cls, history: list[EpochTime], window: int = 3) -> EpochCosts:
        """The mean of the last `window` measurements of each kind.

        The first epoch of a process counts only until another of its kind is measured.
        A validation without AP that was never measured yet is taken to cost as much as
        one with AP: the plan errs short, and grows once the cheaper one is timed.
        """

        def recent(values: list[tuple[float, bool]]) -> float | None:
            steady = [v for v, first in values if not first] or [v for v, _ in values]
            return sum(steady[-window:]) / len(steady[-window:]) if steady else None

        validated = [t for t in history if t.val_s is not None]
        train = recent([(t.train_s, t.first_of_process) for t in history])
        maps = recent([(t.val_s, t.first_of_process) for t in validated if t.mask_ap])
        plain = recent([(t.val_s, t.first_of_process) for t in validated if not t.mask_ap])
        maps = plain if maps is None else maps
        plain = maps if plain is None else plain
        return cls(max(train or 0.0, 1e-3), maps or 0.0, plain or 0.0)

    def validation_s(self, mask_ap: bool) -> float:
        return self.map_val_s if mask_ap else self.plain_val_s


def plan_epochs(
    costs: EpochCosts,
    done: int,
    left_s: float,
    every: int,
    cap: int | None = None,
    pending: bool | None = None,
) -> tuple[int, bool]:
    """(epochs in all, whether `cap` bounded them): `done` epochs and the most that fit.

    Epochs ``done, done + 1, ...`` are planned; each costs its training and its
    validation, with mask AP on the epochs `maps_epoch` names, the last one included.
    `pending` is the validation of epoch ``done - 1`` when it has not run yet: None
    when it has, else whether it computes AP anyway; if no epoch follows it, it is the
    last and computes AP. At least `done` epochs; at most `cap`.
    """

    def pending_s(last: bool) -> float:
        return 0.0 if pending is None else costs.validation_s(pending or last)

    extra = 0
    spent = 0.0  # the planned epochs, each with its own AP setting (the last one's aside)
    while True:
        epoch = done + extra
        as_last = spent + costs.train_s + costs.map_val_s  # this epoch ends the run with AP
        if pending_s(False) + as_last > left_s:
            return epoch, False
        if cap is not None and epoch >= cap:  # time for another epoch, but not the cap
            return epoch, True
        spent += costs.train_s + costs.validation_s(maps_epoch(epoch, None, every))
        extra += 1


class TimeBudget(pl.Callback):
    """Train as many whole epochs as fit in `minutes` of training time, at most `max_epochs`.

    Each epoch's training and validation are timed. The plan is made after epoch 0, and
    again before every later validation, from the time left and the recent costs
    (`EpochCosts`, `plan_epochs`): an epoch's training, a validation with mask AP, one
    without. Planning before the validation lets an epoch learn that it is the last in
    time to compute mask AP (`maps_epoch`), and the cost of that last AP is in the plan.
    Every change stretches the schedule to the plan's last optimiser step and is printed.

    Rank 0 plans; the plan is broadcast and every rank applies it in the same hook, so
    that all processes train the same epochs and compute AP in the same ones.

    Saved in checkpoints: the budget, the cap, the plan, the training time spent and the
    epochs' times. A resumed run (`on_train_start`) goes on with the time that is left:
    with the same budget and cap it continues the plan; with another budget it plans
    again from the time spent; with another cap and the same budget it trains to the
    cap, as asked (``--model.config.max_epochs N`` resumes a run to N epochs).
    """

    def __init__(self, minutes: float, max_epochs: int | None, map_every: int = 1) -> None:
        if not minutes > 0:
            raise ValueError(f"time budget must be positive minutes, got {minutes}")
        if max_epochs is not None and max_epochs < 1:
            raise ValueError(f"time budget: max_epochs must be >= 1 or None, got {max_epochs}")
        if map_every < 1:
            raise ValueError(f"time budget: map_every must be >= 1, got {map_every}")
        self.minutes = float(minutes)
        self.max_epochs = max_epochs
        self.map_every = int(map_every)
        self.epochs: int | None = None
        """The number of epochs planned (None before the first plan)."""
        self.capped = False
        """Whether `max_epochs` (or a resumed run's fixed count) ended the plan, not time."""
        self.fixed = False
        """A resumed run asked for a number of epochs: the budget no longer plans."""
        self.history: list[EpochTime] = []
        self.spent_before_s = 0.0
        """Training seconds of earlier processes of this run (from the checkpoint)."""
        self._saved: dict | None = None
        self._process_start: float | None = None
        self._epoch_start = self._val_start = 0.0
        self._validated = False  # this process has validated once (AP is forced before)
        self._whole_epoch = False  # this epoch's training started at its first batch here
        self._started_epoch: int | None = None  # the epoch `on_train_epoch_start` began
        self._val_maps = False  # this epoch's validation computes mask AP
        self._first_epoch = 0
        self._planned_epoch: int | None = None

    # --- the clock -------------------------------------------------------------
    def spent_s(self) -> float:
        """Training seconds spent by this run, earlier processes included."""
        if self._process_start is None:
            return self.spent_before_s
        return self.spent_before_s + time.monotonic() - self._process_start

    def left_s(self) -> float:
        return self.minutes * 60 - self.spent_s()

    # --- hooks ---------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._process_start = time.monotonic()
        self._first_epoch = trainer.current_epoch
        self._validated = False
        self._started_epoch = None
        if self._saved is None:  # a new run: the budget decides, after epoch 0
            trainer.fit_loop.max_epochs = -1 if self.max_epochs is None else self.max_epochs
            return
        self._resume(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop the clock: what follows training (the summary, tests) is not training time."""
        self.spent_before_s, self._process_start = self.spent_s(), None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._val_start = time.monotonic()
        self._whole_epoch = self._val_maps = False
        self._started_epoch = trainer.current_epoch

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        # Not an epoch resumed in its middle (Lightning then skips on_train_epoch_start,
        # and a restarted epoch's batches count from 0): its times are whole.
        if batch_idx == 0 and self._started_epoch == trainer.current_epoch:
            self._whole_epoch = True

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._val_start, epoch = time.monotonic(), trainer.current_epoch
        first = not self._validated
        if self.history and self._whole_epoch and not self.fixed:  # plan before validating
            training = EpochTime(
                epoch=epoch,
                train_s=self._val_start - self._epoch_start,
                val_s=None,
                mask_ap=False,
                first_of_process=epoch == self._first_epoch,
            )
            forced = maps_epoch(epoch, None, self.map_every, first)
            self._planned_epoch = epoch
            self._plan(trainer, done=epoch + 1, pending=forced, training=training)
        planned = trainer.fit_loop.max_epochs
        last = planned - 1 if planned > 0 else None
        self._val_maps = maps_epoch(epoch, last, self.map_every, first)
        self._validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._whole_epoch:  # resumed at its end or in its middle: nothing to time
            return
        now, epoch = time.monotonic(), trainer.current_epoch
        validated = self._val_start > self._epoch_start
        self.history.append(
            EpochTime(
                epoch=epoch,
                train_s=(self._val_start if validated else now) - self._epoch_start,
                val_s=now - self._val_start if validated else None,
                mask_ap=validated and self._val_maps,
                first_of_process=epoch == self._first_epoch,
            )
        )
        if self._planned_epoch != epoch and not self.fixed:  # epoch 0, or no validation
            self._plan(trainer, done=epoch + 1, pending=None)

    # --- planning ------------------------------------------------------------

    def _plan(
        self,
        trainer: pl.Trainer,
        done: int,
        pending: bool | None,
        training: EpochTime | None = None,
    ) -> None:
        """Plan on rank 0, broadcast, apply on every rank; print a change.

        `training` is the epoch whose training just ended, before its validation: its
        training time is the newest measure of the pace.
        """
        steps = optimizer_steps_per_epoch(trainer)  # on every rank: it may load the data
        decision = None
        if trainer.is_global_zero:
            costs = EpochCosts.from_history(self.history + ([training] if training else []))
            epochs, capped = plan_epochs(
                costs, done, self.left_s(), self.map_every, self.max_epochs, pending
            )
            if pending is None and self.history and not self.history[-1].mask_ap:
                epochs = max(epochs, done + 1)  # the last validation had no AP: one more
            decision = (epochs, capped, self._reason(costs, epochs, steps))
        epochs, capped, reason = trainer.strategy.broadcast(decision, src=0)
        self.capped = capped
        if epochs != self.epochs:
            self._apply(trainer, epochs, reason)

    def _reason(self, costs: EpochCosts, epochs: int, steps: int) -> str:
        """Why the plan is what it is, in words, for the printed line."""
        paid = (
            f"an epoch's training takes {costs.train_s:.1f} s ({costs.train_s / steps:.2f} s "
            f"per step), validation {costs.map_val_s:.1f} s with mask AP and "
            f"{costs.plain_val_s:.1f} s without"
        )
        if self.epochs is None:
            return paid
        return f"{'epochs got faster' if epochs > self.epochs else 'epochs got slower'}: {paid}"

    def _apply(self, trainer: pl.Trainer, epochs: int, reason: str) -> None:
        """Train `epochs` epochs in all, the schedule ending with them, and say so."""
        last_step = self._set_epochs(trainer, epochs)
        if trainer.is_global_zero:
            cap = f" (the cap, --model.config.max_epochs {self.max_epochs})" if self.capped else ""
            print(
                f"time budget {self.minutes:g} min, {self.left_s() / 60:.1f} min left: {reason}; "
                f"training {epochs} epochs = {last_step} steps{cap}. To repeat this run "
                f"without the budget: --model.config.max_epochs {epochs} "
                "--model.config.time_budget_min null",
                flush=True,
            )

    def _resume(self, trainer: pl.Trainer) -> None:
        """Go on with a run restored from a checkpoint: the same plan, or a new one asked for."""
        saved, done = self._saved, trainer.current_epoch
        spent = (
            f"resumed at step {trainer.global_step} (epoch {done}) after "
            f"{self.spent_before_s / 60:.1f} min of training"
        )
        say = print if trainer.is_global_zero else (lambda *args, **kwargs: None)
        if saved["max_epochs"] != self.max_epochs and saved["minutes"] == self.minutes:
            if self.max_epochs is not None:  # a number of epochs asked for: train to it
                say(
                    f"{spent}: --model.config.max_epochs {self.max_epochs} given (was "
                    f"{saved['max_epochs']}): training to epoch {self.max_epochs}; the time "
                    "budget no longer sets the number of epochs",
                    flush=True,
                )
                self.fixed = self.capped = True
                self._set_epochs(trainer, self.max_epochs)
                return
        if saved["minutes"] != self.minutes or saved["max_epochs"] != self.max_epochs:
            say(
                f"{spent}: time budget {saved['minutes']:g} -> {self.minutes:g} min, max_epochs "
                f"{saved['max_epochs']} -> {self.max_epochs}; planning again",
                flush=True,
            )
            self.fixed, self.epochs = False, None
            if self.history:
                self._plan(trainer, done=done, pending=None)
                return
        if self.epochs is None:  # no plan yet: the budget plans after this epoch
            trainer.fit_loop.max_epochs = -1 if self.max_epochs is None else self.max_epochs
            return
        say(f"{spent}: continuing the plan of {self.epochs} epochs", flush=True)
        self._set_epochs(trainer, self.epochs)

    def _set_epochs(self, trainer: pl.Trainer, epochs: int) -> int:
        """`epochs` in all, the schedule ending with them (no message: the caller's).
        Returns the schedule's last step."""
        self.epochs = epochs
        trainer.fit_loop.max_epochs = epochs
        last_step = last_step_of(trainer, epochs, optimizer_steps_per_epoch(trainer))
        end_schedule_at(trainer, last_step)
        return last_step

    # --- checkpoints -----------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "minutes": self.minutes,
            "max_epochs": self.max_epochs,
            "epochs": self.epochs,
            "fixed": self.fixed,
            "capped": self.capped,
            "spent_s": self.spent_s(),
            "history": [dataclasses.asdict(t) for t in self.history],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved = dict(state_dict)
        self.epochs = state_dict.get("epochs")
        self.fixed = bool(state_dict.get("fixed", False))
        self.capped = bool(state_dict.get("capped", False))
        self.spent_before_s = float(state_dict.get("spent_s", 0.0))
        self.history = [EpochTime(**t) for t in state_dict.get("history", [])]


def why_the_fit_ended(trainer: pl.Trainer, budget: TimeBudget | None, trained: int) -> list[str]:
    """The closing lines of a fit that say what set its length, and the flag that changes it.

    `trained` is the number of optimiser steps this process took. A limit that ended the run
    before its plan or its budget (a cap, ``max_steps``, ``should_stop``) is named with
    the flag that lifts it, so that a short run is never silently short.
    """
    planned, done = trainer.fit_loop.max_epochs, trainer.current_epoch
    lines = []
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        lines.append(
            f"--trainer.max_steps {trainer.max_steps} ended the run before its plan; "
            "--trainer.max_steps -1 lifts it"
        )
    elif trained == 0:
        lines.append(
            f"nothing to train: the run had already trained the {done} epochs it was to train; "
            "to train longer, resume with --model.config.max_epochs N (epochs in all)"
            + (" or a larger --model.config.time_budget_min" if budget is not None else "")
        )
    elif planned == -1 or done < planned:
        lines.append(
            f"the run stopped after {done} epochs, before its plan ended (trainer.should_stop: "
            "--trainer.max_time or an early-stopping callback)"
        )
    if budget is None or lines:
        return lines
    if budget.fixed:
        lines.append(
            f"trained to --model.config.max_epochs {budget.max_epochs}, as asked when resuming; "
            "the time budget did not set the number of epochs"
        )
    elif budget.capped:
        lines.append(
            f"--model.config.max_epochs {budget.max_epochs} ended the run with "
            f"{budget.left_s() / 60:.1f} min of its {budget.minutes:g}-min time budget left; "
            "--model.config.max_epochs null lets the budget decide"
        )
    else:
        lines.append(
            f"the time budget of {budget.minutes:g} min set the number of epochs "
            f"({budget.spent_s() / 60:.1f} min of training)"
        )
    return lines
