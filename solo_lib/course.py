"""The course's own training run: notebook 04 trains and saves it, notebook 05 loads it.

In fast mode (``SOLO_FAST=1``, the test suite) the run is a few steps on a few
images and goes to its own folder, so running the tests never replaces a
learner's trained checkpoint.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from solo_lib.checkpointing import AtomicCheckpointIO
from solo_lib.config import SOLOConfig, fast_mode
from solo_lib.data import SOLODataModule
from solo_lib.module import LitSOLO, build_optimizer, build_schedule
from solo_lib.paths import RUNS_DIR
from solo_lib.seeding import seed_everything

#: Fast mode: images used and training steps taken.
FAST_IMAGES = 40
FAST_STEPS = 4


def course_dir(fast: bool | None = None) -> Path:
    """Folder of the course run: ``runs/course`` (``runs/course_fast`` in fast mode)."""
    fast = fast_mode() if fast is None else fast
    return RUNS_DIR / ("course_fast" if fast else "course")


def course_checkpoint(fast: bool | None = None) -> Path:
    """Where notebook 04 saves the trained model and notebook 05 looks for it."""
    return course_dir(fast) / "solo_cpu.ckpt"


def train_course_model(
    cfg: SOLOConfig | None = None, fast: bool | None = None, run_dir: Path | None = None
) -> Path:
    """Train `cfg` (default: the cpu preset) on the built-in data; return the checkpoint path.

    Keeps the checkpoint with the best validation mask AP and copies it to
    ``run_dir / "solo_cpu.ckpt"``; the CSV logs go to ``run_dir / "metrics.csv"``.
    """
    fast = fast_mode() if fast is None else fast
    cfg = cfg or SOLOConfig.cpu()
    run_dir = Path(run_dir) if run_dir is not None else course_dir(fast)
    if fast:
        cfg = cfg.replace(max_epochs=1, warmup_iters=2)
    seed_everything(cfg.seed)
    datamodule = SOLODataModule(cfg, max_images=FAST_IMAGES if fast else None)
    # A new run replaces the last one: without this, Lightning would save "best-v1.ckpt"
    # next to the old "best.ckpt" (CSVLogger itself deletes the old metrics.csv).
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    best = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor="val/AP", mode="max"
    )
    trainer = pl.Trainer(
        max_epochs=cfg.max_epochs,
        limit_train_batches=FAST_STEPS if fast else None,
        logger=CSVLogger(run_dir, name="", version=""),
        callbacks=[best, LearningRateMonitor(logging_interval="step")],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=1 if fast else 10,
        enable_model_summary=False,
    )
    trainer.fit(LitSOLO(cfg), datamodule=datamodule)
    target = run_dir / "solo_cpu.ckpt"
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(best.best_model_path, tmp)
    os.replace(tmp, target)
    return target


def load_course_model(
    fast: bool | None = None, cfg: SOLOConfig | None = None
) -> tuple[LitSOLO, str]:
    """The model notebook 04 trained, or a short one trained now if there is none.

    `cfg` is the configuration of that short run (default: the cpu preset); a
    loaded model keeps the configuration it was trained with. Returns the model
    (eval mode, CPU) and a sentence that says which it is.
    """
    path = course_checkpoint(fast)
    if path.exists():
        message = f"loaded the model trained in notebook 04 from {path}"
    else:
        path = train_course_model(cfg, fast=True, run_dir=course_dir(fast=True))
        message = f"no checkpoint from notebook 04: trained a short one now ({path})"
    model = LitSOLO.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return model.eval(), message


def read_metrics(path: Path) -> dict[str, list[tuple[int, int, float]]]:
    """Lightning's metrics.csv as {metric: [(epoch, step, value), ...]}, empty cells skipped."""
    series: dict[str, list[tuple[int, int, float]]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            epoch, step = int(float(row.get("epoch") or -1)), int(float(row["step"]))
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    series.setdefault(key, []).append((epoch, step, float(value)))
    return series


def learning_rate_schedule(
    cfg: SOLOConfig, steps_per_epoch: int
) -> tuple[list[float], list[float]]:
    """(epoch, learning rate) at every step, from LitSOLO's own optimiser and schedule.

    Steps the real optimiser and `LRSchedule` exactly as Lightning does, once per step,
    for ``cfg.max_epochs`` epochs (the schedule a `TimeBudget` stretches, for a budget).
    """
    optimizer = build_optimizer(torch.nn.Linear(1, 1), cfg, cfg.batch_size)
    schedule = build_schedule(optimizer, cfg, steps_per_epoch, cfg.max_epochs)
    epochs, lrs = [], []
    for epoch in range(cfg.max_epochs):
        for step in range(steps_per_epoch):
            epochs.append(epoch + step / steps_per_epoch)
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
    return epochs, lrs
