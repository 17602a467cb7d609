"""The time budget through the command line: resume, several processes, SIGTERM, small sets.

Time is a fake clock (`tests/support/fake_clock.py`) advanced by the training steps and
validations, so that every number of epochs below is derived by hand.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from run_config import budget_config, solo, write_config

from solo_lib.cli import main
from solo_lib.config import SOLOConfig

#: Steps of 1 s, validation 0.5 s, 2 s with mask AP (every 2nd epoch and the last).
CLOCK = {
    "class_path": "fake_clock.FakeClock",
    "init_args": {"step_s": 1.0, "val_s": 0.5, "map_val_s": 2.0},
}
BATCHES = {"limit_train_batches": 3, "limit_val_batches": 1, "num_sanity_val_steps": 0}


def _fit(config: Path, capsys, *args: str) -> str:
    main(["fit", "--config", str(config), *args])
    return capsys.readouterr().out


def _checkpoint(out: str) -> Path:
    return Path(out.split("last checkpoint: ")[1].split()[0])


def _map_epochs(run_dir: Path) -> list[int]:
    """The epochs whose validation logged mask AP, from a run's metrics.csv."""
    import csv

    with open(run_dir / "metrics.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/AP50")]


def test_resume_continues_the_plan_with_the_time_left_and_trains_a_larger_max_epochs(
    tmp_path, tiny_config, tiny_data_dir, capsys
):
    """Budget 30 s: the plan is 6 epochs (`test_schedule`, the same clock), 27 s.

    max_steps 6 stops it after epoch 1 and its validation (no AP, 0.5 s): 8.5 s spent.
    Resumed at epoch 2 (AP: 2 s), 11.5 s are spent before its validation and 18.5 s left:
    epochs 3 (3.5 s), 4 (5 s) and 5 (the last, 5 s) fit, 15.5 s; a 6th would need 19 s.
    The plan stays 6 epochs, 27 s in all. With a clock restarted at 0 s, 27 s would be
    left and 8 epochs planned.
    Resumed again unchanged it trains nothing; with max_epochs 8 it trains epochs 6-7.
    """
    cfg = budget_config(tiny_config, minutes=0.5)
    config = write_config(tmp_path, cfg, tiny_data_dir, callbacks=[CLOCK], **BATCHES)

    out = _fit(config, capsys, "--trainer.max_steps", "6")
    assert "training 6 epochs = 18 steps" in out
    assert "--trainer.max_steps 6 ended the run before its plan" in out

    out = _fit(config, capsys, "--ckpt_path", str(_checkpoint(out)))
    assert "resumed at step 6 (epoch 2) after 0.1 min of training: continuing the plan of 6" in out
    assert "trained 6 epochs (18 steps); this run: 12 steps" in out
    assert "the time budget of 0.5 min set the number of epochs (0.5 min of training)" in out
    last = _checkpoint(out)
    assert torch.load(last, weights_only=True)["callbacks"]["TimeBudget"]["spent_s"] == 27

    out = _fit(config, capsys, "--ckpt_path", str(last))
    assert "trained 6 epochs (18 steps); this run: 0 steps" in out and "nothing to train" in out

    out = _fit(config, capsys, "--ckpt_path", str(last), "--model.config.max_epochs", "8")
    assert "--model.config.max_epochs 8 given (was None): training to epoch 8" in out
    assert "trained 8 epochs (24 steps); this run: 6 steps" in out
    runs = sorted((tmp_path / "runs" / "cpu").glob("version_*"))
    assert _map_epochs(runs[-1]) == [6, 7]  # the first of the process, and the last
    assert "(epoch 7)" in out.split("validation mask AP")[1].splitlines()[0]


def test_resume_with_another_budget_plans_again_from_the_time_spent(
    tmp_path, tiny_config, tiny_data_dir, capsys
):
    """The 6-epoch run spent 27 s of 30; resumed with 1 min, 33 s are left. Costs: 3 s of
    training, 2 s validation with AP, 0.5 s without. Epoch 6 (first of the process, AP):
    5 s; then 7 (3.5), 8 (5), 9 (3.5), 10 (5), 11 (3.5) and 12 as the last (5): 30.5 s;
    one more epoch would need 34 s. 13 epochs in all."""
    cfg = budget_config(tiny_config, minutes=0.5)
    config = write_config(tmp_path, cfg, tiny_data_dir, callbacks=[CLOCK], **BATCHES)
    last = _checkpoint(_fit(config, capsys))
    out = _fit(config, capsys, "--ckpt_path", str(last), "--model.config.time_budget_min", "1")
    assert "time budget 0.5 -> 1 min" in out and "training 13 epochs" in out
    assert "trained 13 epochs" in out


def test_a_budget_spent_on_resume_still_ends_with_an_epoch_that_computes_ap(
    tmp_path, tiny_config, tiny_data_dir, capsys
):
    """Stopped after epoch 1, whose validation had no AP (8.5 s spent), the run resumes
    with a budget of 6 s, already spent. Ending now would leave epoch 0's AP as the
    run's; it trains epoch 2 instead, whose validation computes AP."""
    cfg = budget_config(tiny_config, minutes=0.5)
    config = write_config(tmp_path, cfg, tiny_data_dir, callbacks=[CLOCK], **BATCHES)
    last = _checkpoint(_fit(config, capsys, "--trainer.max_steps", "6"))
    out = _fit(config, capsys, "--ckpt_path", str(last), "--model.config.time_budget_min", "0.1")
    assert "time budget 0.5 -> 0.1 min" in out and "training 3 epochs" in out
    assert "trained 3 epochs (9 steps); this run: 3 steps" in out
    assert "(epoch 2)" in out.split("validation mask AP")[1].splitlines()[0]


def test_resume_without_a_budget_whatever_the_ap_epochs(
    tmp_path, tiny_config, tiny_data_dir, capsys
):
    """A 1-epoch run resumed to 3 epochs with AP every 2nd: epoch 1 is no AP epoch by the
    rule, but the first of the process computes AP, so that `ModelCheckpoint(monitor=
    "val/AP")` finds it (it stopped the resumed run with an error), and the step schedule
    is stretched from 1 epoch to 3."""
    cfg = tiny_config.replace(max_epochs=1, map_every_n_epochs=2)
    config = write_config(tmp_path, cfg, tiny_data_dir, **BATCHES)
    last = _checkpoint(_fit(config, capsys))
    out = _fit(config, capsys, "--ckpt_path", str(last), "--model.config.max_epochs", "3")
    assert "the learning-rate schedule now ends with epoch 3 (step 9)" in out
    assert "trained 3 epochs (9 steps); this run: 6 steps" in out
    assert "best checkpoint" in out
    runs = sorted((tmp_path / "runs" / "cpu").glob("version_*"))
    assert _map_epochs(runs[-1]) == [1, 2]
    milestones = torch.load(_checkpoint(out), weights_only=True)["lr_schedulers"][0]
    assert tuple(milestones["lr_lambdas"][0]["milestones"]) == (6, 9)  # epochs 2 and 3 of 3
    out = _fit(
        config, capsys, "--ckpt_path", str(_checkpoint(out)), "--model.config.max_epochs", "3"
    )
    assert "trained 3 epochs (9 steps); this run: 0 steps" in out and "nothing to train" in out


def test_a_small_data_set_trains_until_the_budget_not_a_hidden_cap(
    tmp_path, tiny_config, tiny_data_dir, capsys
):
    """The presets set no cap (it was 40 epochs, and a small set stopped there with most of
    its budget unused): two steps of 0.05 s an epoch, free validation, fit 60 epochs in a
    6-s budget. Given a cap, the closing lines say that it, not the budget, ended the run."""
    assert SOLOConfig.cpu().max_epochs is None and SOLOConfig.dense().max_epochs is None
    cfg = budget_config(tiny_config, minutes=0.1)
    clock = {"class_path": "fake_clock.FakeClock", "init_args": {"step_s": 0.05}}
    config = write_config(
        tmp_path,
        cfg,
        tiny_data_dir,
        callbacks=[clock],
        limit_train_batches=2,
        num_sanity_val_steps=0,
    )
    out = _fit(config, capsys)
    assert "training 60 epochs = 120 steps" in out and "trained 60 epochs" in out
    out = _fit(config, capsys, "--model.config.max_epochs", "10")
    assert "--model.config.max_epochs 10 ended the run with 0.1 min of its 0.1-min" in out
    assert "--model.config.max_epochs null lets the budget decide" in out


# --- several processes ---------------------------------------------------------------
def _solo(*args: str) -> subprocess.Popen:
    return solo(*args, start_new_session=True)  # its own process group: a timeout ends every rank


def _wait(proc: subprocess.Popen, timeout: float) -> str:
    """The output of `proc`; a process group still running after `timeout` is killed and
    the test fails (a hang between ranks must not hang the test suite)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"still running after {timeout} s:\n{out[-3000:]}")
    return out


DDP = ["--trainer.accelerator=cpu", "--trainer.strategy=ddp", "--trainer.devices=2"]


def test_two_processes_whose_clocks_disagree_train_and_validate_the_same_epochs(
    tmp_path, tiny_config, tiny_data_dir
):
    """Rank 1's clock runs twice as fast as rank 0's (every step and validation counts
    double): planned apart, rank 1 would stop after half the epochs and leave rank 0
    waiting in a collective. Rank 0 plans; both train its 6 epochs, with AP on 0, 2, 4, 5."""
    cfg = budget_config(tiny_config, minutes=0.5)
    skewed = {**CLOCK, "init_args": {**CLOCK["init_args"], "rank_skew": 1.0}}
    probe = {"class_path": "budget_probe.RecordPlan", "init_args": {"out_dir": str(tmp_path)}}
    config = write_config(tmp_path, cfg, tiny_data_dir, callbacks=[skewed, probe], **BATCHES)
    out = _wait(_solo("fit", "--config", str(config), *DDP), timeout=300)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert records[0] == records[1], out[-3000:]
    assert records[0] == {"epochs": 6, "planned": 6, "map_epochs": [0, 2, 4, 5], "steps": 18}


def test_sigterm_stops_both_processes_with_a_checkpoint_that_resumes(
    tmp_path, tiny_config, tiny_data_dir
):
    cfg = tiny_config.replace(max_epochs=50)
    marker = tmp_path / "training"
    slow = {
        "class_path": "budget_probe.SlowSteps",
        "init_args": {"seconds": 0.3, "marker": str(marker)},
    }
    config = write_config(tmp_path, cfg, tiny_data_dir, callbacks=[slow], limit_val_batches=1)
    proc = _solo("fit", "--config", str(config), *DDP)
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), _wait(proc, 5)
    os.killpg(proc.pid, signal.SIGTERM)
    out = _wait(proc, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    saved = Path(out.split("SIGTERM: stopped at ")[1].split("saved ")[1].split(". Resume")[0])
    step = torch.load(saved, weights_only=True)["global_step"]
    assert step >= 2

    resumed = _wait(
        _solo(
            "fit",
            "--config",
            str(config),
            "--ckpt_path",
            str(saved),
            "--model.config.max_epochs",
            "1",
            "--trainer.callbacks=[]",
        ),
        timeout=120,
    )
    assert "trained 1 epochs" in resumed, resumed[-3000:]
