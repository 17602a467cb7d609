"""Checkpoints that are never half-written: save to a temporary file, then rename."""

from __future__ import annotations

import os
from typing import Any

from pytorch_lightning.plugins.io import TorchCheckpointIO

from solo_lib.atomic import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose saves are atomic.

    A run killed while it writes a checkpoint leaves the previous file intact,
    so ``--ckpt_path last.ckpt`` always finds a whole checkpoint. (Lightning's own
    save writes the file in place: a kill in the middle leaves a truncated file.)
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        with atomic_file(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
