"""Checkpoints that are never half-written: save to a temporary file, fsync, then rename."""

from __future__ import annotations

import os
from typing import Any

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
