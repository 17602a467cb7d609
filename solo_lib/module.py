"""`LitSOLO`: the PyTorch Lightning module that trains and validates SOLO.

It owns no algorithm of its own: the network comes from `solo_lib.model`, the
training targets from `solo_lib.targets`, the loss from `solo_lib.losses`,
post-processing from `solo_lib.postprocess` and the mask mAP from
`solo_lib.evaluation`. What it adds is the training loop's glue: targets built
on the batch's device, logging, the learning-rate schedule, gradient clipping
and a stop on non-finite losses.
"""

from __future__ import annotations

import dataclasses
import math
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor

from solo_lib.checkpointing import StopOnSigterm
from solo_lib.config import SOLOConfig
from solo_lib.evaluation import MaskEvaluator
from solo_lib.losses import solo_loss
from solo_lib.model import SOLO, SOLOOutput, SOLOParts
from solo_lib.postprocess import postprocess_parts
from solo_lib.schedule import (
    LRSchedule,
    TimeBudget,
    end_schedule_at,
    maps_epoch,
    optimizer_steps_per_epoch,
)
from solo_lib.targets import build_batch_targets

Batch = tuple[Tensor, list[dict[str, Tensor]]]


def batch_losses(
    model: SOLO,
    images: Tensor,
    targets: list[dict[str, Tensor]],
    cfg: SOLOConfig,
) -> tuple[dict[str, Tensor], SOLOParts]:
    """The SOLO losses of one batch, and the network's outputs they were computed from.

    Targets are built here, on the batch's device (they depend on the augmentation).
    Only the masks that the loss reads are made, those of the targets' active cells;
    the returned `SOLOParts` can make any other (validation's post-processing makes its
    candidates'). The logits are cast to float32 before the loss, so that the losses
    stay in float32 under bf16 autocast.
    """
    level_targets = build_batch_targets(targets, cfg)
    parts = model.mask_makers(images)
    output = parts.made([t.active for t in level_targets])
    output_fp32 = SOLOOutput(
        category=[c.float() for c in output.category], masks=[m.float() for m in output.masks]
    )
    return solo_loss(output_fp32, level_targets, cfg), parts


def build_optimizer(model: torch.nn.Module, cfg: SOLOConfig, total_batch_size: int):
    """SGD with momentum or AdamW (``cfg.optimizer``) at the linearly scaled learning rate.

    No weight decay on biases and normalisation parameters (the 1-d tensors).
    """
    lr = cfg.learning_rate(total_batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(cfg.momentum, 0.999))
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: SOLOConfig, steps_per_epoch: int, epochs: int | None
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step `LRSchedule` of ``cfg`` over `epochs` epochs of `steps_per_epoch`
    optimiser steps; ``epochs=None`` until a time budget has planned the run.

    ``cfg.lr_milestones`` are given in epochs and converted to steps here.
    """
    schedule = LRSchedule(
        total_steps=None if epochs is None else epochs * steps_per_epoch,
        kind=cfg.lr_schedule,
        milestones=tuple(m * steps_per_epoch for m in cfg.lr_milestones),
        gamma=cfg.lr_gamma,
        warmup_iters=cfg.warmup_iters,
        warmup_ratio=cfg.warmup_ratio,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class LitSOLO(pl.LightningModule):
    """SOLO in Lightning, built from one `SOLOConfig`.

    Logged metrics: ``train/{loss,focal,dice}`` (per step and per epoch),
    ``val/{loss,focal,dice}``, the mask mAP ``val/{AP,AP50,AP75}`` plus
    ``val/AP_<class name>``, and ``time/minutes`` since training started; ``test/...``
    the same for `trainer.test`. In training, mask mAP is computed on the epochs
    `solo_lib.schedule.maps_epoch` names: 0, k, 2k, ... for k =
    ``config.map_every_n_epochs``, the last, and the first validation of a resumed run,
    so that a checkpoint callback that monitors ``val/AP`` finds a value from the first
    validation on. `trainer.validate` and `trainer.test` always compute it.
    """

    def __init__(self, config: SOLOConfig) -> None:
        super().__init__()
        if isinstance(config, dict):  # as stored in a checkpoint's hyper-parameters
            config = SOLOConfig(**config)
        self.cfg = config
        # Plain types only, so that checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters({"config": dataclasses.asdict(self.cfg)})
        self.model = SOLO(self.cfg)
        self.evaluator = MaskEvaluator(self.cfg.class_names)
        self.map_epoch: int | None = None
        """The epoch of the last mask AP logged in `fit` (None before the first)."""
        self.first_step = 0
        """The optimiser step this process started training at: 0, or where a run resumed."""
        self._validated = False  # this process has validated in `fit` (AP is forced before)

    def forward(self, images: Tensor) -> SOLOOutput:
        return self.model(images)

    def setup(self, stage: str) -> None:
        """Take the COCO category ids of the data module's annotation file, when the
        config has none, into the config and the hyper-parameters: checkpoints then
        keep them, and predictions are written with them (`PredictionWriter`)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        ids = getattr(datamodule, "category_ids", None)
        if self.cfg.category_ids is None and ids is not None:
            self.cfg.category_ids = tuple(ids)
            self.hparams["config"]["category_ids"] = list(ids)

    # --- training and validation ---------------------------------------------
    def _losses(self, images: Tensor, targets: list[dict[str, Tensor]]) -> tuple[dict, SOLOParts]:
        """`batch_losses` of this module's network: the one step both stages share."""
        return batch_losses(self.model, images, targets, self.cfg)

    def _check_finite(self, losses: dict[str, Tensor], stage: str, batch_idx: int) -> None:
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise FloatingPointError(
                    f"non-finite {stage} {name} loss ({value.item()}) at global step "
                    f"{self.global_step} (epoch {self.current_epoch}, batch {batch_idx}); "
                    "lower the learning rate or check the input data"
                )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, targets = batch
        losses, _ = self._losses(images, targets)
        self._check_finite(losses, "train", batch_idx)
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in losses.items()},
            on_step=True,
            on_epoch=True,
            batch_size=images.shape[0],
            sync_dist=True,
        )
        return losses["loss"]

    def on_train_start(self) -> None:
        """Start the clock; without a time budget, end the schedule with the trainer's epochs.

        A run resumed with another ``max_epochs`` restores the schedule of the old number
        from the checkpoint: it is stretched to the new one here, and the change printed.
        (With a budget, `TimeBudget` owns the number of epochs and the schedule's end.)
        """
        self._train_start = time.monotonic()
        self.first_step = self.global_step
        self._validated = False
        epochs = self.trainer.max_epochs
        if self.cfg.time_budget_min is not None or epochs is None or epochs < 1:
            return
        steps = optimizer_steps_per_epoch(self.trainer)
        milestones = tuple(m * steps for m in self.cfg.lr_milestones)
        if (
            end_schedule_at(self.trainer, epochs * steps, milestones)
            and self.trainer.is_global_zero
        ):
            print(
                f"resumed at epoch {self.current_epoch}: the learning-rate schedule now ends "
                f"with epoch {epochs} (step {epochs * steps})",
                flush=True,
            )

    def on_train_epoch_end(self) -> None:
        """Log ``time/minutes``: wall time since training started, validation included."""
        minutes = (time.monotonic() - self._train_start) / 60
        self.log("time/minutes", minutes, on_epoch=True, sync_dist=False)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resumed fit starts at the checkpoint's step, even one that trains nothing
        (Lightning then skips `on_train_start`)."""
        self.first_step = int(checkpoint.get("global_step", 0))

    def _map_this_epoch(self) -> bool:
        """Whether this evaluation computes mask mAP: always outside `fit`, and in `fit` on
        the epochs `maps_epoch` names: 0, k, 2k, ... (k = ``config.map_every_n_epochs``),
        the last, and the first validation of this process."""
        if self.trainer.state.fn != TrainerFn.FITTING:
            return True
        planned = self.trainer.max_epochs
        last = planned - 1 if planned is not None and planned > 0 else None
        first = not self._validated
        return maps_epoch(self.current_epoch, last, self.cfg.map_every_n_epochs, first)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            self._validated = True

    def on_test_epoch_end(self) -> None:
        self._log_map("test")

    def _evaluation_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        """The losses of a held-out batch; on mask-AP epochs also its predictions.

        The loss makes the masks of the active cells only; on mask-AP epochs,
        post-processing makes those of its candidates: never the S^2 masks of every cell.
        """
        images, targets = batch
        with_map = self._map_this_epoch()
        losses, parts = self._losses(images, targets)
        self._check_finite(losses, stage, batch_idx)
        self.log_dict(
            {f"{stage}/{k}": v for k, v in losses.items()},
            on_epoch=True,
            batch_size=images.shape[0],
            sync_dist=True,
        )
        if with_map:
            predictions = postprocess_parts(parts, targets, self.cfg)
            self.evaluator.update(
                predictions,
                [t["original"] for t in targets],
                image_ids=[int(t["image_id"]) for t in targets],
            )

    def _log_map(self, stage: str) -> None:
        """Log ``{stage}/AP``, ``AP50``, ``AP75`` and the AP per class, when computed."""
        if not self._map_this_epoch():
            return
        result = self.evaluator.compute()
        self.evaluator.reset()
        metrics = {f"{stage}/{k}": float(result[k]) for k in ("AP", "AP50", "AP75")}
        for name, ap in result["per_class_AP"].items():
            metrics[f"{stage}/AP_{name}"] = float(ap)
        self.log_dict(metrics, sync_dist=False)
        if stage == "val" and self.trainer.state.fn == TrainerFn.FITTING:
            self.map_epoch = self.current_epoch

    def predict_step(self, batch: Batch, batch_idx: int) -> tuple[Tensor, list[dict], list[dict]]:
        """(images, targets, predictions): one dict per image with ``masks``, ``labels``, ``scores``."""
        images, targets = batch
        if not targets:  # every file of the batch was unreadable (skipped by `collate`)
            return images, targets, []
        return images, targets, self.model.predict(images, targets)

    # --- optimisation ----------------------------------------------------------
    def configure_optimizers(self):
        """The optimiser (`build_optimizer`) and its per-step schedule (`build_schedule`)."""
        world = self.trainer.world_size if self._trainer is not None else 1
        accumulate = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        optimizer = build_optimizer(self.model, self.cfg, self.cfg.batch_size * world * accumulate)
        epochs, steps_per_epoch = self.cfg.max_epochs, 1
        if self._trainer is not None:
            planned = self.trainer.max_epochs
            epochs = planned if planned is not None and planned > 0 else None
            steps_per_epoch = optimizer_steps_per_epoch(self.trainer)
        schedule = build_schedule(optimizer, self.cfg, steps_per_epoch, epochs)
        return [optimizer], [{"scheduler": schedule, "interval": "step", "name": "lr"}]

    def configure_callbacks(self) -> list[pl.Callback]:
        """`StopOnSigterm` (a checkpoint to resume from), and a `TimeBudget` when
        ``config.time_budget_min`` is set: epochs fitted to the budget."""
        callbacks: list[pl.Callback] = [StopOnSigterm()]
        if self.cfg.time_budget_min is not None:
            callbacks.append(
                TimeBudget(
                    self.cfg.time_budget_min,
                    max_epochs=self.cfg.max_epochs,
                    map_every=self.cfg.map_every_n_epochs,
                )
            )
        return callbacks

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradient norm at ``config.grad_clip_norm`` (35 in the paper)."""
        if self.cfg.grad_clip_norm and math.isfinite(self.cfg.grad_clip_norm):
            self.clip_gradients(
                optimizer, gradient_clip_val=self.cfg.grad_clip_norm, gradient_clip_algorithm="norm"
            )
