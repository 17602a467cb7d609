"""`AtomicCheckpointIO`: local saves are whole and on disk; remote paths go through fsspec.
`StopOnSigterm`: a run stopped by SIGTERM saves a checkpoint that resumes it."""

from __future__ import annotations

import os
import signal

import fsspec
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from solo_lib.checkpointing import SIGTERM_EXIT_CODE, AtomicCheckpointIO, StoppedBySigterm
from solo_lib.data import SOLODataModule
from solo_lib.module import LitSOLO


def test_remote_path_is_written_by_fsspec_not_as_a_local_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, "memory://ckpts/last.ckpt")
    with fsspec.open("memory://ckpts/last.ckpt", "rb") as f:
        assert torch.equal(torch.load(f, weights_only=True)["w"], torch.ones(3))
    assert not list(tmp_path.iterdir())  # no "memory:" folder made on the local disk


def test_local_save_is_fsynced_before_the_rename(tmp_path, monkeypatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        os,
        "replace",
        lambda a, b: events.append(f"replace {os.path.basename(b)}") or real_replace(a, b),
    )
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "last.ckpt")
    assert events == ["fsync", "replace last.ckpt", "fsync"]  # file, rename, folder entry
    assert torch.equal(torch.load(tmp_path / "last.ckpt", weights_only=True)["w"], torch.ones(2))


def test_a_save_that_fails_half_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, path)

    def dies_half_way(self, checkpoint, path, storage_options=None):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(2)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


class _SigtermAt(pl.Callback):
    """Sends this process SIGTERM when training batch `batch` of epoch 0 starts, and notes
    whether a validation ran afterwards."""

    def __init__(self, batch: int) -> None:
        self.batch, self.validated = batch, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validated = not trainer.sanity_checking


def _trainer(accumulate: int, **options) -> pl.Trainer:
    """Two epochs of 3 batches, one validation batch, no logger."""
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


def _fit_until_sigterm(cfg, data_dir, tmp_path, at: int, accumulate: int) -> _SigtermAt:
    probe = _SigtermAt(at)
    trainer = _trainer(accumulate, default_root_dir=tmp_path, callbacks=[probe])
    with pytest.raises(StoppedBySigterm) as stopped:
        trainer.fit(LitSOLO(cfg), datamodule=SOLODataModule(cfg, root=str(data_dir)))
    assert stopped.value.code == SIGTERM_EXIT_CODE
    return probe


@pytest.mark.parametrize(
    "at, accumulate, step, validated",
    [
        (0, 1, 1, False),  # right after the step of the batch that received it
        (0, 2, 1, False),  # after the optimiser step that closes the accumulation window
        (2, 1, 3, True),  # on the epoch's last batch: the epoch validates first
    ],
)
def test_sigterm_saves_a_checkpoint_at_a_whole_optimiser_step(
    tiny_config, tiny_data_dir, tmp_path, at, accumulate, step, validated
) -> None:
    cfg = tiny_config.replace(max_epochs=2)
    probe = _fit_until_sigterm(cfg, tiny_data_dir, tmp_path, at, accumulate)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == step
    assert probe.validated == validated
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was given back

    resumed = _trainer(accumulate, enable_checkpointing=False)
    model = LitSOLO(cfg)
    resumed.fit(model, datamodule=SOLODataModule(cfg, root=str(tiny_data_dir)), ckpt_path=last)
    assert resumed.current_epoch == 2 and model.map_epoch == 1
