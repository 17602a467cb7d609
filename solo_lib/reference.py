"""The course's reference runs: their weights scored the same way on every machine.

A reference run, ``reference/<job name>`` (`solo_lib.course.reference_run`), is a run of
the course's own ``fit`` command kept in the repository, so that notebooks 04-07 have a
trained model from the first minute. It is laid out as a run folder: the run's
``metrics.csv`` and ``config.yaml``, ``checkpoints/`` with the best checkpoint's weights
alone (`solo_lib.export.save_weights`), and ``record.json`` with what it scores.

`score` evaluates weights on the run's own validation split with the validation code of
`fit` (`LitSOLO.validation_step`, mask AP against the annotations as stored), in float32
so that every machine gets the same numbers. The record holds two scores: the whole
validation split, and its first `SUBSET_BATCHES` batches, which the test suite checks
in fast mode (``tests/test_reference.py``): a change to the model, the geometry or
post-processing that changes what the weights predict then fails CI.

Publishing a finished run (once, by whoever trained it)::

    python -m solo_lib.reference runs/reference/version_0 --job cpu \\
        --command "python -m solo_lib fit ..." --machine "2-core AMD EPYC, avx512_bf16"
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml

from solo_lib.atomic import atomic_file
from solo_lib.data.datamodule import SOLODataModule
from solo_lib.export import save_weights
from solo_lib.module import LitSOLO
from solo_lib.paths import REFERENCE_DIR, REPO_ROOT

#: The fast-mode score: the validation split's first batches (16 images at batch 4).
SUBSET_BATCHES = 4
#: The scores a record holds, as `MaskEvaluator` names them.
METRICS = ("AP", "AP50", "AP75")
#: The most a reference checkpoint may weigh: it lives in the git repository.
MAX_WEIGHTS_MB = 20.0


def weights_of(run: Path) -> Path:
    """The one checkpoint in a reference run's ``checkpoints/``."""
    found = sorted((run / "checkpoints").glob("*.ckpt"))
    if len(found) != 1:
        raise FileNotFoundError(f"{run / 'checkpoints'}: expected one .ckpt, found {len(found)}")
    return found[0]


def score(checkpoint: Path, batches: int | None = None, progress: bool = False) -> dict[str, float]:
    """AP, AP50 and AP75 of a run's checkpoint on the run's validation split, in float32.

    `checkpoint` lies in a run's ``checkpoints/`` (a reference run's or any other). The
    data module is built from the run's own ``config.yaml`` (its ``data`` section) and
    the network's config from the checkpoint, as ``validate --ckpt_path`` does.
    `batches`: only the first so many validation batches (None: all of them).
    `progress` (``python -m solo_lib.reference``): a status line on stderr, and
    Lightning's validation bar.
    """
    data_options = yaml.safe_load((checkpoint.parents[1] / "config.yaml").read_text())["data"]
    model = LitSOLO.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    data = SOLODataModule(model.cfg, **data_options)
    if progress:
        data.setup("validate")  # for the count; validate's own setup then finds it done
        images = len(data.val_dataset)
        part = (
            f"all {images} validation images"
            if batches is None
            else f"the first {batches} batches "
            f"({min(images, batches * model.cfg.batch_size)} of {images} validation images)"
        )
        print(  # a status, not a result
            f"scoring {checkpoint} on {part} in float32", file=sys.stderr, flush=True
        )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",  # the same numbers on every machine
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        limit_val_batches=1.0 if batches is None else batches,
    )
    [metrics] = trainer.validate(model, data, verbose=False)
    return {name: float(metrics[f"val/{name}"]) for name in METRICS}


def read_record(run: Path) -> dict[str, Any]:
    """A reference run's ``record.json``: how it was trained and what it scores."""
    return json.loads((run / "record.json").read_text())


def _git_commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    return result.stdout.strip() or "unknown"


def publish(
    source: Path, target: Path, command: str, machine: str, progress: bool = False
) -> dict[str, Any]:
    """Make the finished run `source` the reference run `target`, and return its record.

    Copies ``metrics.csv`` and ``config.yaml``, stores the best checkpoint's weights alone
    (at most `MAX_WEIGHTS_MB`), scores them (`score`: whole split and subset) and writes
    ``record.json`` with the command, the machine, the training minutes and the epochs.
    `progress` (the command line): each scoring says on stderr what it scores, with
    Lightning's validation bar (minutes on a CPU).
    """
    from solo_lib.course import best_checkpoint, read_metrics  # course imports this module

    best = best_checkpoint(source)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.csv", "config.yaml"):
        shutil.copyfile(source / name, target / name)
    for old in (target / "checkpoints").glob("*.ckpt"):
        old.unlink()
    weights = save_weights(best, target / "checkpoints" / best.name)
    size_mb = weights.stat().st_size / 2**20
    if size_mb > MAX_WEIGHTS_MB:
        raise ValueError(f"{weights}: {size_mb:.1f} MB, more than {MAX_WEIGHTS_MB} MB")
    metrics = read_metrics(source / "metrics.csv")
    record = {
        "command": command,
        "machine": machine,
        "date": datetime.date.today().isoformat(),
        "commit": _git_commit(),
        "training_minutes": round(metrics["time/minutes"][-1][2], 1),
        "epochs": metrics["time/minutes"][-1][0] + 1,
        "checkpoint": best.name,
        "weights_mb": round(size_mb, 2),
        "validation": {"batches": None, **score(weights, progress=progress)},
        "subset": {"batches": SUBSET_BATCHES, **score(weights, SUBSET_BATCHES, progress)},
    }
    with atomic_file(target / "record.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    """``python -m solo_lib.reference RUN --job NAME --command ... --machine ...``."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("run", type=Path, help="a finished run folder (runs/<name>/version_N)")
    parser.add_argument("--job", required=True, help="the job's name: reference/<job>")
    parser.add_argument("--command", required=True, help="the exact command that trained it")
    parser.add_argument("--machine", required=True, help="where it trained, in words")
    options = parser.parse_args(argv)
    target = REFERENCE_DIR / options.job
    record = publish(options.run, target, options.command, options.machine, progress=True)
    print(json.dumps(record, indent=2), flush=True)


if __name__ == "__main__":
    main()
