"""`python -m solo_lib fit|validate|test|predict`: the command line, built on LightningCLI.

Start from a preset's YAML file and override any field on the command line::

    python -m solo_lib fit --config solo_lib/configs/cpu.yaml --model.config.max_epochs 4
    python -m solo_lib predict --config solo_lib/configs/cpu.yaml --ckpt_path best.ckpt \
        --data.predict_dir my_images/ --predict_output.output_dir runs/predictions

The model's `SOLOConfig` is the single source of truth: the data module receives
the same config, the trainer's ``max_epochs`` and the global seed are linked to it.
"""

from __future__ import annotations

import time

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from solo_lib.data import SOLODataModule
from solo_lib.module import LitSOLO
from solo_lib.prediction import PredictionWriter


class SOLOCLI(LightningCLI):
    """LightningCLI with the config links of SOLO and a summary after training."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # `predict` writes COCO results and overlays: --predict_output.output_dir DIR
        parser.add_lightning_class_args(PredictionWriter, "predict_output")
        parser.link_arguments(
            "model", "data.config", apply_on="instantiate", compute_fn=lambda model: model.cfg
        )
        parser.link_arguments("model.config.max_epochs", "trainer.max_epochs")
        parser.link_arguments("model.config.seed", "seed_everything")

    def before_fit(self) -> None:
        self._fit_start = time.monotonic()

    def after_fit(self) -> None:
        """Print what was trained (epochs, steps, minutes, budget), the validation mask AP
        and where the checkpoints are."""
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        minutes = (time.monotonic() - self._fit_start) / 60
        budget = self.model.cfg.time_budget_min
        lines = [
            f"trained {trainer.current_epoch} epochs ({trainer.global_step} steps) in "
            f"{minutes:.1f} min" + (f" (time budget {budget:g} min)" if budget is not None else "")
        ]
        if "val/AP" in metrics:
            lines.append(
                f"validation mask AP {float(metrics['val/AP']):.3f}, "
                f"AP50 {float(metrics['val/AP50']):.3f}, AP75 {float(metrics['val/AP75']):.3f} "
                f"(epoch {trainer.current_epoch - 1})"
            )
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_path:
            score = checkpoint.best_model_score
            lines.append(
                f"best checkpoint: {checkpoint.best_model_path} (val/AP {float(score):.3f})"
            )
        if checkpoint is not None and checkpoint.last_model_path:
            lines.append(f"last checkpoint: {checkpoint.last_model_path}")
        print("\n".join(lines), flush=True)


def main(args: list[str] | None = None) -> None:
    """Run the command line with `args` (default: sys.argv)."""
    SOLOCLI(LitSOLO, SOLODataModule, args=args, save_config_kwargs={"overwrite": True})
