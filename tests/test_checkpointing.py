"""`AtomicCheckpointIO`: local saves are whole and on disk; remote paths go through fsspec."""

from __future__ import annotations

import os

import fsspec
import pytest
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from solo_lib.checkpointing import AtomicCheckpointIO


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
