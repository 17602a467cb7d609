"""Checkpoints that are never half-written (save to a temporary file, fsync, then rename),
and a checkpoint to resume from when a run is stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.plugins.io import TorchCheckpointIO

from solo_lib.atomic import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves are atomic and durable.

    A run killed (or a machine that loses power) while it writes a checkpoint leaves
    the previous file intact, so ``--ckpt_path last.ckpt`` always finds a whole
    checkpoint: `atomic_file` writes a temporary file in the same folder, fsyncs it and
    renames it. (Lightning's own save commits an fsspec transaction, without fsync.)
    Remote paths (``s3://``, ``memory://``, ...) are left to Lightning's fsspec save.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_file(str(path).removeprefix("file://")) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


#: The exit status of a run stopped by SIGTERM, as a shell reports a process it ended.
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


class StoppedBySigterm(SystemExit):
    """A fit stopped by SIGTERM after saving a checkpoint; exits with `SIGTERM_EXIT_CODE`."""


class StopOnSigterm(pl.Callback):
    """On SIGTERM, every process stops after the same training step, with a checkpoint.

    Lightning's own SIGTERM handling broadcasts from inside the signal handler, which
    can meet a collective of the training step on another rank: two DDP processes
    that received SIGTERM were seen waiting on each other for minutes. Here the
    handler only notes the signal. After each training step the processes agree
    whether any of them received it (one boolean all-reduce; nothing under one
    process), then, after the optimiser step that ends the accumulation window, all
    save ``last.ckpt`` in the checkpoint folder together and stop with
    `StoppedBySigterm`, before validation. On an epoch's last batch the epoch first
    validates and ends (a checkpoint saved before would resume as an epoch that never
    validated). ``--ckpt_path`` on that file resumes the run where it stopped.
    """

    def __init__(self) -> None:
        self.received = False
        self._stop_at_end = False
        self.checkpoint_path: Path | None = None
        self._previous: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = self._stop_at_end = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self.received = True

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        # Every rank takes part in the all-reduce after every batch, and every condition
        # after it is the same on every rank.
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        self.received = True
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if (idx + 1) % trainer.accumulate_grad_batches and not last_batch:
            return  # in the middle of an accumulation window: stop after its optimiser step
        if last_batch:
            # A checkpoint now would resume as a finished epoch that never validated:
            # let the epoch validate and end, then stop (`on_train_end`).
            trainer.should_stop = self._stop_at_end = True
            return
        self._save_and_stop(trainer)

    def _save_and_stop(self, trainer: pl.Trainer) -> None:
        callback = trainer.checkpoint_callback
        folder = Path(
            callback.dirpath if callback and callback.dirpath else trainer.default_root_dir
        )
        self.checkpoint_path = folder / "last.ckpt"
        trainer.save_checkpoint(self.checkpoint_path)  # every rank calls it; rank 0 writes
        if trainer.is_global_zero:
            print(
                f"SIGTERM: stopped at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                f"saved {self.checkpoint_path}. Resume with the same command and "
                f"--ckpt_path {self.checkpoint_path}",
                flush=True,
            )
        raise StoppedBySigterm(SIGTERM_EXIT_CODE)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()
        if self._stop_at_end:
            self._save_and_stop(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
