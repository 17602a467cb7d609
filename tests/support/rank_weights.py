"""A callback for the DDP test: each process saves its parameters when training ends."""

import os

import pytorch_lightning as pl
import torch


class SaveRankWeights(pl.Callback):
    """Write ``rank{N}.pt`` with this process's parameters into `out_dir`."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = {k: v.detach().cpu() for k, v in pl_module.named_parameters()}
        torch.save(params, os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"))
