"""LitSOLO: the schedule really reaches Lightning, and non-finite losses stop training."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from solo_lib.course import read_metrics
from solo_lib.data import SOLODataModule
from solo_lib.module import LitSOLO


class _RecordLearningRate(pl.Callback):
    def __init__(self) -> None:
        self.per_epoch: list[float] = []
        self.per_step: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.per_epoch.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.per_step.append(trainer.optimizers[0].param_groups[0]["lr"])


def _trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    return pl.Trainer(**(defaults | kwargs))


def test_learning_rate_warms_up_then_drops_at_each_milestone(tiny_config, tiny_data_dir):
    cfg = tiny_config.replace(warmup_iters=3, max_epochs=4, lr_milestones=(2, 3))
    record = _RecordLearningRate()
    trainer = _trainer(max_epochs=cfg.max_epochs, limit_train_batches=3, callbacks=[record])
    trainer.fit(LitSOLO(cfg), datamodule=SOLODataModule(cfg, root=str(tiny_data_dir)))

    lr = cfg.learning_rate(cfg.batch_size)
    # Linear warm-up over the first 3 steps, from warmup_ratio * lr to lr.
    assert record.per_step[0] == pytest.approx(lr * cfg.warmup_ratio)
    assert record.per_step[0] < record.per_step[1] < record.per_step[2] < lr
    # Epochs 0 and 1 run at lr (after warm-up), epoch 2 at lr/10, epoch 3 at lr/100.
    assert record.per_epoch[1:] == pytest.approx([lr, lr * 0.1, lr * 0.01])


def test_map_every_n_epochs_starts_at_epoch_0_so_checkpointing_on_val_ap_works(
    tiny_config, tiny_data_dir, tmp_path
):
    cfg = tiny_config.replace(max_epochs=4, map_every_n_epochs=2)
    best = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val/AP", mode="max")
    logger = pl.loggers.CSVLogger(tmp_path, name="log", version=0)
    trainer = _trainer(
        logger=logger,
        max_epochs=cfg.max_epochs,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_checkpointing=True,
        callbacks=[best],
    )
    trainer.fit(LitSOLO(cfg), datamodule=SOLODataModule(cfg, root=str(tiny_data_dir)))

    # epochs 0 and 2 by the rule, 3 because it is the last
    metrics = read_metrics(Path(logger.log_dir) / "metrics.csv")
    assert [epoch for epoch, _, _ in metrics["val/AP"]] == [0, 2, 3]
    assert best.best_model_path


def test_validate_and_test_compute_mask_ap_whatever_the_epoch(tiny_config, tiny_data_dir):
    """Outside `fit` the AP is always computed: after 3 epochs `validate` and `test` run
    at epoch 3, which is neither a multiple of map_every_n_epochs = 2 nor the last."""
    cfg = tiny_config.replace(max_epochs=3, map_every_n_epochs=2)
    model, data = LitSOLO(cfg), SOLODataModule(cfg, root=str(tiny_data_dir))
    trainer = _trainer(max_epochs=3, limit_train_batches=1)
    trainer.fit(model, datamodule=data)
    (validated,) = _trainer(limit_val_batches=1.0).validate(model, datamodule=data, verbose=False)
    (tested,) = _trainer().test(model, datamodule=data, verbose=False)
    for stage, metrics in (("val", validated), ("test", tested)):
        assert {f"{stage}/{k}" for k in ("loss", "AP", "AP50", "AP75")} <= set(metrics)


class _ExplodingSOLO(LitSOLO):
    """Returns an infinite dice loss from the third training step on."""

    def _losses(self, images, targets):
        losses, output = super()._losses(images, targets)
        if self.training and self.global_step >= 2:
            losses["dice"] = losses["dice"] * torch.inf
        return losses, output


def test_non_finite_loss_stops_training_naming_step_and_loss(tiny_config, tiny_data_dir):
    trainer = _trainer(max_epochs=2, limit_train_batches=4)
    with pytest.raises(FloatingPointError, match=r"non-finite train dice loss .* global step 2"):
        trainer.fit(
            _ExplodingSOLO(tiny_config),
            datamodule=SOLODataModule(tiny_config, root=str(tiny_data_dir)),
        )


class _RecordDtypes(LitSOLO):
    """Records the dtype of the network's logits and of the losses at every training step."""

    seen: list[tuple[torch.dtype, torch.dtype]]

    def training_step(self, batch, batch_idx):
        images, _ = batch
        logits = self.model(images).category[0]
        loss = super().training_step(batch, batch_idx)
        self.seen.append((logits.dtype, loss.dtype))
        return loss


def test_bf16_mixed_runs_the_network_in_bf16_and_keeps_the_loss_in_float32(
    tiny_config, tiny_data_dir
):
    """The precision that `trainer.precision: null` picks on CPUs with bf16 instructions."""
    module = _RecordDtypes(tiny_config)
    module.seen = []
    before = module.model.head.cate_out.weight.detach().clone()
    trainer = _trainer(max_epochs=1, limit_train_batches=2, precision="bf16-mixed")
    trainer.fit(module, datamodule=SOLODataModule(tiny_config, root=str(tiny_data_dir)))
    assert module.seen == [(torch.bfloat16, torch.float32)] * 2
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    assert not torch.equal(
        module.model.head.cate_out.weight, before
    )  # weights stay float32 and move
    assert module.model.head.cate_out.weight.dtype == torch.float32
