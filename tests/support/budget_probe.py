"""Callbacks for the time-budget tests that run the command line in other processes."""

import json
import time
from pathlib import Path

import pytorch_lightning as pl


class RecordPlan(pl.Callback):
    """Each process writes ``rank{N}.json`` into `out_dir` when training ends: the epochs
    trained, the epochs planned, the epochs whose validation computed mask AP, the steps."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.map_epochs: list[int] = []

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.sanity_checking and pl_module._map_this_epoch():
            self.map_epochs.append(trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        record = {
            "epochs": trainer.current_epoch,
            "planned": trainer.fit_loop.max_epochs,
            "map_epochs": self.map_epochs,
            "steps": trainer.global_step,
        }
        path = Path(self.out_dir) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record))


class SlowSteps(pl.Callback):
    """Training steps take at least `seconds`; after step 2 rank 0 creates `marker`, so
    that a test knows the processes are training."""

    def __init__(self, seconds: float, marker: str) -> None:
        self.seconds, self.marker = seconds, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
        if trainer.global_step >= 2 and trainer.is_global_zero:
            Path(self.marker).touch()
