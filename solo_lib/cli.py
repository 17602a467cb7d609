"""`python -m solo_lib fit|validate|test|predict`: the command line, built on LightningCLI.

Start from a preset's YAML file and override any field on the command line::

    python -m solo_lib fit --config solo_lib/configs/cpu.yaml --model.config.max_epochs 4
    python -m solo_lib predict --config solo_lib/configs/cpu.yaml --ckpt_path best.ckpt \
        --data.predict_dir my_images/ --predict_output.output_dir runs/predictions

The model's `SOLOConfig` is the single source of truth: the data module receives
the same config, the trainer's ``max_epochs`` and the global seed are linked to it.
With ``--ckpt_path``, the checkpoint fixes the network (`MODEL_FIELDS`) and the command
line sets everything else: a longer schedule to resume, another score threshold to predict.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from solo_lib.config import MODEL_FIELDS
from solo_lib.data import SOLODataModule
from solo_lib.hardware import fastest_precision
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

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse as Lightning does, noting which config fields the command line sets."""
        self._given_fields = config_fields_given(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """With ``--ckpt_path``: the network's fields from the checkpoint, the rest as given.

        Lightning's own version loads the checkpoint's whole `SOLOConfig` over the
        parsed one, so that ``--model.config.max_epochs`` (to train longer) or
        ``--model.config.score_threshold`` (to predict) given with a checkpoint were
        silently replaced. Here only `MODEL_FIELDS` come from the checkpoint, and one
        given on the command line with another value stops the run, naming both values.
        """
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        stored = checkpoint.get("hyper_parameters", {}).get("config")
        if not stored:
            return
        config = self.config[subcommand]["model"]["config"]
        for field in MODEL_FIELDS:
            if field not in stored:
                continue
            given, trained = _plain(config[field]), _plain(stored[field])
            if field in self._given_fields and given != trained:
                raise ValueError(
                    f"--model.config.{field} {given} conflicts with the checkpoint {ckpt_path}, "
                    f"whose network was trained with {field} {trained}; leave it out to use "
                    "the checkpoint's"
                )
            config[field] = stored[field]

    def before_instantiate_classes(self) -> None:
        """``trainer.precision: null`` (the cpu preset's) becomes this machine's fastest
        precision (`fastest_precision`), and the choice is printed."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config["trainer"]
        if trainer.get("precision") is None:
            trainer["precision"] = fastest_precision(str(trainer.get("accelerator") or "auto"))
            print(
                f"precision: {trainer['precision']} (trainer.precision null: the fastest on "
                "this machine; bf16-mixed needs bf16 instructions or a GPU with bf16)",
                flush=True,
            )

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
            scored = f" (val/AP {float(score):.3f})" if score is not None else ""
            lines.append(f"best checkpoint: {checkpoint.best_model_path}{scored}")
        if checkpoint is not None and checkpoint.last_model_path:
            lines.append(f"last checkpoint: {checkpoint.last_model_path}")
        print("\n".join(lines), flush=True)


def config_fields_given(args: ArgsType) -> set[str]:
    """The `SOLOConfig` fields that `args` set explicitly (``--model.config.FIELD``)."""
    if not isinstance(args, Sequence) or isinstance(args, str):
        return set()  # a dict or Namespace of arguments: nothing is singled out
    prefix = "--model.config."
    return {arg[len(prefix) :].split("=")[0] for arg in args if arg.startswith(prefix)}


def _plain(value: object) -> object:
    """`value` with lists turned into tuples, for comparing YAML/CLI and checkpoint values."""
    return tuple(value) if isinstance(value, list | tuple) else value


def main(args: list[str] | None = None) -> None:
    """Run the command line with `args` (default: sys.argv)."""
    SOLOCLI(LitSOLO, SOLODataModule, args=args, save_config_kwargs={"overwrite": True})
