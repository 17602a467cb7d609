"""The learning-rate schedule's values, and a time budget that sizes the run to fit."""

import math

import pytest
import pytorch_lightning as pl

from solo_lib import schedule as schedule_module
from solo_lib.data import SOLODataModule
from solo_lib.module import LitSOLO
from solo_lib.schedule import LRSchedule, TimeBudget


def test_cosine_schedule_values_by_hand():
    cosine = LRSchedule(total_steps=10, kind="cosine", warmup_iters=2, warmup_ratio=0.1)
    assert cosine(0) == pytest.approx(0.1)  # warm-up start; the cosine factor is still 1
    assert cosine(1) == pytest.approx(0.55 * (1 + math.cos(math.pi * 0.1)) / 2)
    assert cosine(5) == pytest.approx(0.5)  # half way: (1 + cos(pi / 2)) / 2
    assert cosine(10) == pytest.approx(0.0) and cosine(12) == pytest.approx(0.0)


def test_step_schedule_and_stretch_keep_the_milestone_fractions():
    step = LRSchedule(total_steps=40, kind="step", milestones=(30, 36), gamma=0.1)
    assert [step(s) for s in (29, 30, 35, 36)] == pytest.approx([1, 0.1, 0.1, 0.01])
    step.stretch(20)
    assert step.milestones == (15, 18) and step.total_steps == 20
    with pytest.raises(ValueError, match="lr schedule"):
        LRSchedule(total_steps=1, kind="poly")


class _Clock:
    """A fake `time` module for solo_lib.schedule: one second per training step."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class _Tick(pl.Callback):
    """Records the learning rate of every step."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


class _Pace(_Tick):
    """Advances the fake clock by `seconds(epoch)` per training step."""

    def __init__(self, clock: _Clock, seconds) -> None:
        super().__init__(clock)
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.now += self.seconds(trainer.current_epoch)


def _fit_with_pace(cfg, tiny_data_dir, tick) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=cfg.max_epochs,
        limit_train_batches=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[tick],
    )
    trainer.fit(LitSOLO(cfg), datamodule=SOLODataModule(cfg, root=str(tiny_data_dir)))
    return trainer


def test_time_budget_fits_whole_epochs_and_ends_the_cosine_at_the_last_step(
    tiny_config, tiny_data_dir, monkeypatch, capsys
):
    clock = _Clock()
    monkeypatch.setattr(schedule_module, "time", clock)
    # Budget 15 s; epoch 0 = 3 steps = 3 s, so 12 s are left: 1 + 12 / 3 = 5 epochs.
    cfg = tiny_config.replace(
        max_epochs=30, time_budget_min=0.25, lr_schedule="cosine", warmup_iters=0
    )
    tick = _Pace(clock, lambda epoch: 1.0)
    trainer = _fit_with_pace(cfg, tiny_data_dir, tick)

    assert trainer.current_epoch == 5 and trainer.global_step == 15
    assert "training 5 epochs = 15 steps" in capsys.readouterr().out
    budget = next(c for c in trainer.callbacks if isinstance(c, TimeBudget))
    assert budget.state_dict() == {"minutes": 0.25, "epochs": 5}
    assert budget.max_epochs == 30  # the config's cap, not the trainer's current plan
    lr = cfg.learning_rate(cfg.batch_size)
    # Epoch 0 ran on the provisional 30-epoch curve, then the cosine ends at step 15.
    assert tick.lrs[3] == pytest.approx(lr * (1 + math.cos(math.pi * 3 / 15)) / 2)
    assert tick.lrs[14] == pytest.approx(lr * (1 + math.cos(math.pi * 14 / 15)) / 2)
    assert tick.lrs[14] < 0.02 * lr


def test_time_budget_gains_epochs_when_epoch_0_was_slow(
    tiny_config, tiny_data_dir, monkeypatch, capsys
):
    clock = _Clock()
    monkeypatch.setattr(schedule_module, "time", clock)
    # Budget 30 s, 3 steps per epoch; tiny_config has mask AP every 2nd epoch, so the pace
    # is the mean of the last 2 epochs. Epoch 0 takes 12 s: 1 + 18 / 12 = 2 epochs. Epoch 1
    # takes 3 s, ending at 15 s: pace (12 + 3) / 2 = 7.5, 15 s left fit 2 more, 4 in all.
    # Epoch 2 ends at 18 s; epoch 0 has left the window: pace 3, 12 s fit 4 more, 7 in all.
    cfg = tiny_config.replace(
        max_epochs=30, time_budget_min=0.5, lr_schedule="cosine", warmup_iters=0
    )
    tick = _Pace(clock, lambda epoch: 4.0 if epoch == 0 else 1.0)
    trainer = _fit_with_pace(cfg, tiny_data_dir, tick)
    out = capsys.readouterr().out
    assert "epoch 0 took 12.0 s" in out and "training 2 epochs" in out
    assert "epochs got faster: epochs 0-1 took 7.5 s on average" in out
    assert "training 4 epochs" in out
    assert "epochs got faster: epochs 1-2 took 3.0 s on average" in out
    assert "training 7 epochs = 21 steps" in out
    assert trainer.current_epoch == 7 and clock.now == 30
    lr = cfg.learning_rate(cfg.batch_size)
    assert tick.lrs[-1] == pytest.approx(lr * (1 + math.cos(math.pi * 20 / 21)) / 2)


def test_time_budget_shortens_the_run_when_the_machine_slows_down(
    tiny_config, tiny_data_dir, monkeypatch, capsys
):
    clock = _Clock()
    monkeypatch.setattr(schedule_module, "time", clock)
    # Budget 30 s, 3 steps per epoch. After epoch 0 (3 s): 1 + 27 / 3 = 10 epochs.
    # Epoch 2 takes 12 s, ending at 18 s: the pace of epochs 1-2 is 7.5 s, 12 s left fit
    # one more epoch, 4 in all.
    cfg = tiny_config.replace(
        max_epochs=30, time_budget_min=0.5, lr_schedule="cosine", warmup_iters=0
    )
    tick = _Pace(clock, lambda epoch: 1.0 if epoch < 2 else 4.0)
    trainer = _fit_with_pace(cfg, tiny_data_dir, tick)
    out = capsys.readouterr().out
    assert "training 10 epochs = 30 steps" in out
    assert "the machine slowed down: epochs 1-2 took 7.5 s on average" in out
    assert "training 4 epochs" in out
    assert trainer.current_epoch == 4 and clock.now <= 30
    lr = cfg.learning_rate(cfg.batch_size)
    assert tick.lrs[-1] == pytest.approx(lr * (1 + math.cos(math.pi * 11 / 12)) / 2)


@pytest.mark.parametrize("cycle, plans", [(2, [8, 10]), (1, [8, 15, 8, 14, 9, 13])])
def test_time_budget_plans_steadily_when_mask_ap_epochs_are_slower(
    tiny_config, tiny_data_dir, monkeypatch, capsys, cycle, plans
):
    """Mask AP on every second epoch: epochs of 6 s and 3 s alternate. Budget 48 s.

    Over a window of 2 epochs the pace is 4.5 s from epoch 1 on: after epoch 0 (6 s),
    1 + 42 / 6 = 8 epochs; after epoch 1 (9 s), 2 + floor(39 / 4.5) = 10, which every
    later epoch confirms (e.g. after epoch 2, at 15 s: 3 + floor(33 / 4.5) = 10); the
    10 epochs end at 45 s. Planned from one epoch at a time (cycle 1) the plan swings:
    after epoch 1, 2 + 39 / 3 = 15; after epoch 2, 3 + 33 / 6 = 8; after epoch 3, 4 + 30 / 3
    = 14; after epoch 4, 5 + 24 / 6 = 9; after epoch 5, 6 + 21 / 3 = 13.
    """
    clock = _Clock()
    monkeypatch.setattr(schedule_module, "time", clock)
    cfg = tiny_config.replace(
        max_epochs=30,
        time_budget_min=0.8,
        lr_schedule="cosine",
        warmup_iters=0,
        map_every_n_epochs=cycle,
    )
    tick = _Pace(clock, lambda epoch: 2.0 if epoch % 2 == 0 else 1.0)
    trainer = _fit_with_pace(cfg, tiny_data_dir, tick)
    out = capsys.readouterr().out
    planned = [
        int(line.split("training ")[1].split()[0])
        for line in out.splitlines()
        if "training " in line
    ]
    assert planned[: len(plans)] == plans
    if cycle == 2:
        assert trainer.current_epoch == 10 and clock.now == 45
        lr = cfg.learning_rate(cfg.batch_size)
        assert tick.lrs[-1] == pytest.approx(lr * (1 + math.cos(math.pi * 29 / 30)) / 2)
