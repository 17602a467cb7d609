"""The course's models: README's jobs, each trained by one command, used by the notebooks.

There is one training path per model. The main job,
``python -m solo_lib fit --config solo_lib/configs/cpu.yaml`` (`MAIN_JOB`), trains the
`cpu` preset and writes its logs and checkpoints to ``runs/cpu/version_N``; notebook 04
can run exactly that command in its kernel (`train_job`), reads the newest run's log,
and notebook 05 loads its best checkpoint (`load_job_model`). Notebook 06 does the same
with the dense preset (`DENSE_JOB`), notebook 07 with SOLOv2's (`SOLOV2_JOB`).

Before the learner has trained a job, the notebooks show the course's reference run of
it (`reference_run`): ``reference/<name>``, laid out as a run folder (metrics.csv,
config.yaml, checkpoints/ with the best weights alone) and trained by the course's own
command, recorded in its README.md. A job without a reference run and without a run
of the learner's stops the notebook with the command that trains it, instead of
quietly training a toy model.

In fast mode (``SOLO_FAST=1``, the test suite) the same command runs a few steps on
a few images into ``runs/<name>_fast``, so running the tests never touches a learner's
trained model.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from solo_lib.config import SOLOConfig, fast_mode
from solo_lib.module import LitSOLO, build_optimizer, build_schedule
from solo_lib.paths import REFERENCE_DIR, REPO_ROOT, RUNS_DIR
from solo_lib.presets import CONFIG_DIR

#: Fast mode: a job's command on `FAST_IMAGES` images for `FAST_STEPS` steps.
FAST_IMAGES = 40
FAST_STEPS = 4


@dataclass(frozen=True)
class Job:
    """A training command of README: its preset file, its run folder and its duration.

    ``name`` is the preset's logger name: the runs are ``runs/<name>/version_N``.
    ``minutes`` is how long the command takes on 2 CPU cores, its time budget included.
    """

    name: str
    config: Path
    minutes: int

    @property
    def command(self) -> str:
        """The command, run from the repository root."""
        return f"python -m solo_lib fit --config {self.config.relative_to(REPO_ROOT)}"


#: README's main job: SOLO's cpu preset on the built-in objects set (notebooks 04, 05).
MAIN_JOB = Job("cpu", CONFIG_DIR / "cpu.yaml", 20)
#: The dense preset on the built-in dense cells set (notebook 06).
DENSE_JOB = Job("dense", CONFIG_DIR / "dense.yaml", 10)
#: SOLOv2's cpu preset on the built-in objects set (notebook 07).
SOLOV2_JOB = Job("solov2_cpu", CONFIG_DIR / "solov2_cpu.yaml", 20)
#: Every job the notebooks load.
JOBS = (MAIN_JOB, DENSE_JOB, SOLOV2_JOB)

#: The preset file of the main job.
MAIN_CONFIG = MAIN_JOB.config
#: README's main command, run from the repository root.
MAIN_COMMAND = MAIN_JOB.command
#: How long the main job takes on 2 CPU cores, its time budget included.
MAIN_MINUTES = MAIN_JOB.minutes


class NoTrainedModel(FileNotFoundError):
    """There is no run of a job yet; the message says how to train one."""


def runs_root(fast: bool | None = None, job: Job = MAIN_JOB) -> Path:
    """Where a job's runs are: ``runs/<name>`` (``runs/<name>_fast`` in fast mode)."""
    fast = fast_mode() if fast is None else fast
    return RUNS_DIR / (f"{job.name}_fast" if fast else job.name)


def _fast_overrides() -> list[str]:
    return [
        "--data.max_images",
        str(FAST_IMAGES),
        "--trainer.limit_train_batches",
        str(FAST_STEPS),
        "--trainer.log_every_n_steps",
        "1",
        "--model.config.max_epochs",
        "1",
        "--model.config.time_budget_min",
        "null",
        "--model.config.warmup_iters",
        "2",
        "--model.config.num_workers",
        "0",
    ]


def train_job(
    job: Job = MAIN_JOB, fast: bool | None = None, extra_args: list[str] | None = None
) -> Path:
    """Run ``job.command`` in this process; return the folder of the run it wrote.

    The logs go to `runs_root` wherever the notebook runs. `extra_args` are appended to
    the command line (later arguments win), as on a shell.
    """
    from solo_lib.cli import main  # the command line itself, not a copy of its Trainer

    fast = fast_mode() if fast is None else fast
    root = runs_root(fast, job)
    args = [
        "fit",
        "--config",
        str(job.config),
        "--trainer.logger.init_args.save_dir",
        str(root.parent),
        "--trainer.logger.init_args.name",
        root.name,
        "--trainer.enable_progress_bar",
        "false",
    ]
    with warnings.catch_warnings():
        # In a notebook or under pytest, sys.argv holds the host's own arguments.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        main(args + (_fast_overrides() if fast else []) + list(extra_args or []))
    return newest_run(fast, job)


def train_main_job(fast: bool | None = None, extra_args: list[str] | None = None) -> Path:
    """`train_job` of the main job (notebook 04)."""
    return train_job(MAIN_JOB, fast, extra_args)


def _version(run: Path) -> int:
    return int(run.name.split("_")[-1])


def newest_run(fast: bool | None = None, job: Job = MAIN_JOB) -> Path:
    """The newest run folder of a job (highest ``version_N`` with a metrics.csv).

    Raises `NoTrainedModel`, with the command that trains one, when there is none.
    """
    fast = fast_mode() if fast is None else fast
    root = runs_root(fast, job)
    runs = [p.parent for p in root.glob("version_*/metrics.csv")]
    runs = [run for run in runs if any((run / "checkpoints").glob("*.ckpt"))]
    if not runs:
        hint = " or set TRAIN = True in notebook 04;" if job == MAIN_JOB else ";"
        raise NoTrainedModel(
            f"No trained model in {root}. Train it with\n"
            f"    {job.command}\n"
            f"from the repository root (about {job.minutes} minutes on 2 CPU cores),"
            f"{hint} then run this notebook again."
        )
    return max(runs, key=_version)


def best_checkpoint(run: Path) -> Path:
    """The checkpoint with the best validation AP in `run` (``best-*.ckpt``), else ``last.ckpt``."""
    best = sorted((run / "checkpoints").glob("best*.ckpt"))
    if best:
        return best[-1]
    last = run / "checkpoints" / "last.ckpt"
    if last.exists():
        return last
    raise NoTrainedModel(f"{run / 'checkpoints'}: no checkpoint (best-*.ckpt or last.ckpt)")


def reference_run(job: Job = MAIN_JOB) -> Path | None:
    """The course's reference run of `job` (``reference/<name>``), or None if it has none.

    A run folder like the learner's: metrics.csv, config.yaml, and in checkpoints/ the
    best weights alone; its README.md says how, where and how long it was trained.
    """
    run = REFERENCE_DIR / job.name
    has_weights = any((run / "checkpoints").glob("*.ckpt"))
    return run if has_weights and (run / "metrics.csv").is_file() else None


def is_reference(run: Path) -> bool:
    """Whether `run` is one of the course's reference runs rather than the learner's."""
    return run.resolve().parent == REFERENCE_DIR.resolve()


def job_run(job: Job = MAIN_JOB, fast: bool | None = None) -> Path:
    """The run a notebook shows: the learner's newest run of `job`, else its reference run.

    Raises `NoTrainedModel` (which names the command) when there is neither.
    """
    try:
        return newest_run(fast, job)
    except NoTrainedModel:
        reference = reference_run(job)
        if reference is None:
            raise
        return reference


def describe_run(run: Path) -> str:
    """One line that says whose run `run` is and where it lies, for a notebook to print."""
    where = run.relative_to(REPO_ROOT) if run.is_relative_to(REPO_ROOT) else run
    if is_reference(run):
        return f"the course's reference run, {where} (how it was trained: {where}/record.json)"
    return f"your run, {where}"


def run_config(run: Path) -> SOLOConfig:
    """The `SOLOConfig` a run trained with, from its ``config.yaml`` (the command's, saved by fit)."""
    return SOLOConfig(**yaml.safe_load((run / "config.yaml").read_text())["model"]["config"])


def load_run_model(run: Path) -> tuple[LitSOLO, Path]:
    """The best checkpoint of `run` (`best_checkpoint`), in eval mode on the CPU, and its path."""
    path = best_checkpoint(run)
    model = LitSOLO.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return model.eval(), path


def load_job_model(job: Job = MAIN_JOB, fast: bool | None = None) -> tuple[LitSOLO, Path]:
    """`load_run_model` of `job_run`: the learner's newest run of the job, else its reference run.

    In fast mode a job with neither is trained first (a few steps); otherwise it raises
    `NoTrainedModel`, whose message gives the command.
    """
    fast = fast_mode() if fast is None else fast
    try:
        run = job_run(job, fast)
    except NoTrainedModel:
        if not fast:
            raise
        run = train_job(job, fast=True)
    return load_run_model(run)


def load_main_model(fast: bool | None = None) -> tuple[LitSOLO, Path]:
    """`load_job_model` of the main job (notebook 05)."""
    return load_job_model(MAIN_JOB, fast)


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


def format_training_log(metrics: dict[str, list[tuple[int, int, float]]]) -> str:
    """One line per epoch of a run's `read_metrics`: minutes, losses and validation mask AP.

    Columns: epoch, wall minutes since training started (validation included), the
    epoch's mean training loss, the validation loss, and AP / AP50 / AP75 where the
    epoch computed them ("-" where it did not).
    """
    by_epoch: dict[int, dict[str, float]] = {}
    names = {
        "time/minutes": "minutes",
        "train/loss_epoch": "train",
        "val/loss": "val",
        "val/AP": "AP",
        "val/AP50": "AP50",
        "val/AP75": "AP75",
    }
    for key, column in names.items():
        for epoch, _, value in metrics.get(key, []):
            by_epoch.setdefault(epoch, {})[column] = value
    layout = (("minutes", 7, 1), ("train", 10, 3), ("val", 8, 3))
    layout += (("AP", 5, 3), ("AP50", 5, 3), ("AP75", 5, 3))
    lines = ["epoch  minutes  train loss  val loss     AP   AP50   AP75"]
    for epoch in sorted(by_epoch):
        row = by_epoch[epoch]
        cells = [
            f"{row[column]:{width}.{digits}f}" if column in row else f"{'-':>{width}}"
            for column, width, digits in layout
        ]
        lines.append(f"{epoch:5d}  " + "  ".join(cells))
    return "\n".join(lines)
