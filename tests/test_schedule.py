"""The learning-rate schedule's values, the time budget's plan, and a fit that follows it."""

import math

import pytest
import pytorch_lightning as pl
from fake_clock import FakeClock
from run_config import budget_config

from solo_lib.data import SOLODataModule
from solo_lib.module import LitSOLO
from solo_lib.schedule import EpochCosts, EpochTime, LRSchedule, TimeBudget, plan_epochs


def test_cosine_schedule_values_by_hand():
    cosine = LRSchedule(total_steps=10, kind="cosine", warmup_iters=2, warmup_ratio=0.1)
    assert cosine(0) == pytest.approx(0.1)  # warm-up start; the cosine factor is still 1
    assert cosine(1) == pytest.approx(0.55 * (1 + math.cos(math.pi * 0.1)) / 2)
    assert cosine(5) == pytest.approx(0.5)  # half way: (1 + cos(pi / 2)) / 2
    assert cosine(10) == pytest.approx(0.0) and cosine(12) == pytest.approx(0.0)


def test_an_unplanned_cosine_holds_until_stretched():
    cosine = LRSchedule(total_steps=None, kind="cosine", warmup_iters=2, warmup_ratio=0.1)
    assert [cosine(s) for s in (0, 1, 2, 50)] == pytest.approx([0.1, 0.55, 1, 1])
    cosine.stretch(100)
    assert cosine(50) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="milestones needs total_steps"):
        LRSchedule(total_steps=None, kind="step", milestones=(3,))


def test_step_schedule_and_stretch_keep_the_milestone_fractions():
    step = LRSchedule(total_steps=40, kind="step", milestones=(30, 36), gamma=0.1)
    assert [step(s) for s in (29, 30, 35, 36)] == pytest.approx([1, 0.1, 0.1, 0.01])
    step.stretch(20)
    assert step.milestones == (15, 18) and step.total_steps == 20
    step.stretch(40, now=16)  # a passed milestone stays passed: the rate never rises again
    assert step.milestones == (15, 36) and step(16) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="lr schedule"):
        LRSchedule(total_steps=1, kind="poly")


# --- the plan, by hand ---------------------------------------------------------------
# Epochs of 10 s training; validation 8 s with mask AP, 0 s without; AP every 4th epoch.
COSTS = EpochCosts(train_s=10.0, map_val_s=8.0, plain_val_s=0.0)


def test_plan_pays_for_the_last_epochs_mask_ap():
    """After epoch 0, 30 s left. Epoch 1 as the last: 10 + 8 = 18 s, fits; epochs 1-2 with
    2 the last: 10 + 18 = 28 s, fits; 1-3: 20 + 18 = 38 s does not. 3 epochs in all. A
    pace of 10 s an epoch (the AP of the last ignored) would plan 4, and overrun by 8 s."""
    assert plan_epochs(COSTS, done=1, left_s=30, every=4) == (3, False)
    assert plan_epochs(COSTS, done=1, left_s=27.9, every=4) == (2, False)
    assert plan_epochs(COSTS, done=1, left_s=5, every=4) == (1, False)  # none fits: stop now


def test_plan_stops_at_the_cap_and_says_so_only_when_time_was_left():
    assert plan_epochs(COSTS, done=1, left_s=30, every=4, cap=2) == (2, True)
    assert plan_epochs(COSTS, done=1, left_s=30, every=4, cap=3) == (3, False)
    assert plan_epochs(COSTS, done=1, left_s=1e4, every=4, cap=None)[0] > 40  # no hidden cap


def test_plan_counts_the_pending_validation():
    """Planned before epoch 1's validation (done=2): if another epoch follows, epoch 1
    validates without AP (0 s) and epoch 2 costs 18 s as the last; if not, epoch 1 is the
    last and its validation computes AP. Forced AP (`pending=True`) costs 8 s more."""
    assert plan_epochs(COSTS, done=2, left_s=18, every=4, pending=False) == (3, False)
    assert plan_epochs(COSTS, done=2, left_s=17, every=4, pending=False) == (2, False)
    assert plan_epochs(COSTS, done=2, left_s=18, every=4, pending=True) == (2, False)


def test_costs_leave_out_a_process_first_epoch_and_err_short_without_a_plain_validation():
    history = [
        EpochTime(0, train_s=30, val_s=9, mask_ap=True, first_of_process=True),
        EpochTime(1, train_s=10, val_s=1, mask_ap=False, first_of_process=False),
        EpochTime(2, train_s=12, val_s=7, mask_ap=True, first_of_process=False),
    ]
    assert EpochCosts.from_history(history) == EpochCosts(11.0, 7.0, 1.0)
    training = EpochTime(3, train_s=14, val_s=None, mask_ap=False, first_of_process=False)
    assert EpochCosts.from_history([*history, training]) == EpochCosts(12.0, 7.0, 1.0)
    only_epoch_0 = EpochCosts.from_history(history[:1])
    assert only_epoch_0 == EpochCosts(30.0, 9.0, 9.0)  # no plain validation timed yet


# --- a fit that follows the plan ------------------------------------------------------
class _Record(pl.Callback):
    """The learning rate of every step and the epochs whose validation computed mask AP."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.map_epochs: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and pl_module._map_this_epoch():
            self.map_epochs.append(trainer.current_epoch)


def _fit(cfg, tiny_data_dir, *callbacks, **trainer_args) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=-1 if cfg.max_epochs is None else cfg.max_epochs,
        limit_train_batches=trainer_args.pop("limit_train_batches", 3),
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **trainer_args,
    )
    trainer.fit(LitSOLO(cfg), datamodule=SOLODataModule(cfg, root=str(tiny_data_dir)))
    return trainer


def test_time_budget_fits_the_epochs_and_ends_the_cosine_at_the_last_step(
    tiny_config, tiny_data_dir, capsys
):
    """Budget 30 s; 3 steps of 1 s an epoch; validation 2 s with AP, 0.5 s without.

    After epoch 0 (5 s), 25 s are left and a validation without AP was never timed: it
    is taken to cost 2 s, so 5 s an epoch, 5 more epochs. Before epoch 2's validation
    (at 11.5 s, 18.5 s left) the plain one is timed (0.5 s): epoch 2 (AP, 2 s), 3 (3.5 s),
    4 (AP, 5 s) and 5 (the last, with AP, 5 s) need 15.5 s, a sixth epoch 19 s: still 6.
    """
    clock, record = FakeClock(step_s=1.0, val_s=0.5, map_val_s=2.0), _Record()
    trainer = _fit(budget_config(tiny_config, 0.5), tiny_data_dir, clock, record)
    assert "training 6 epochs = 18 steps" in capsys.readouterr().out
    assert trainer.current_epoch == 6 and trainer.global_step == 18
    assert record.map_epochs == [0, 2, 4, 5]  # every 2nd, and the last
    assert clock.now == 5 + 3.5 + 5 + 3.5 + 5 + 5 <= 30
    lr = tiny_config.learning_rate(tiny_config.batch_size)
    assert record.lrs[17] == pytest.approx(lr * (1 + math.cos(math.pi * 17 / 18)) / 2)
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.0  # the cosine's floor


class _SlowDownAt(pl.Callback):
    """From epoch `epoch` on, the clock's training steps take `step_s` seconds."""

    def __init__(self, clock: FakeClock, epoch: int, step_s: float) -> None:
        self.clock, self.epoch, self.step_s = clock, epoch, step_s

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self.clock.step_s = self.step_s


def test_an_epoch_that_a_slowdown_makes_the_last_computes_mask_ap(
    tiny_config, tiny_data_dir, capsys
):
    """Budget 30 s, AP every 4th epoch; steps of 1 s, validation 0 s (with AP 1 s).

    After epoch 0 (4 s; a validation without AP, not timed yet, counts as 1 s): 26 s fit
    6 more epochs of 4 s, 7 in all. Epoch 1's steps take 3 s: before its validation, at
    13 s, an epoch's training takes 9 s and 17 s are left. Epoch 2 as the last needs
    1 + 9 + 1 = 11 s, epochs 2 and 3 need 21 s: 3 epochs in all, and epoch 2, no multiple
    of 4, computes AP because it is the last. Planned after the validation instead, epoch
    1 would have ended the run without AP.
    """
    clock, record = FakeClock(step_s=1.0, val_s=0.0, map_val_s=1.0), _Record()
    cfg = budget_config(tiny_config, 0.5, every=4)
    trainer = _fit(cfg, tiny_data_dir, clock, _SlowDownAt(clock, 1, 3.0), record)
    out = capsys.readouterr().out
    assert "training 7 epochs" in out and "epochs got slower" in out
    assert trainer.current_epoch == 3
    assert record.map_epochs == [0, 2]
    assert clock.now == 4 + 9 + 9 + 1


def test_time_budget_counts_optimiser_steps_under_accumulation(tiny_config, tiny_data_dir):
    """3 batches an epoch, accumulated by 2: 2 optimiser steps an epoch (the last one after
    1 batch). The cosine must end at the last of them, at 0; planned in batches it would
    end at twice the steps taken, about half way down."""
    clock, record = FakeClock(step_s=1.0), _Record()
    cfg = budget_config(tiny_config, 0.25)
    trainer = _fit(cfg, tiny_data_dir, clock, record, accumulate_grad_batches=2)
    assert trainer.global_step == 2 * trainer.current_epoch
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == trainer.global_step
    assert scheduler.get_last_lr()[0] == 0.0


def test_time_budget_refuses_a_bad_setting():
    with pytest.raises(ValueError, match="positive minutes"):
        TimeBudget(0, max_epochs=None)
    with pytest.raises(ValueError, match="max_epochs"):
        TimeBudget(1, max_epochs=0)
