"""`python -m solo_lib fit|validate|test|predict|analyse|export`: the command line (LightningCLI).

Start from a preset's YAML file and override any field on the command line::

    python -m solo_lib fit --config solo_lib/configs/cpu.yaml --model.config.max_epochs 4
    python -m solo_lib predict --config solo_lib/configs/cpu.yaml --ckpt_path best.ckpt \
        --data.predict_dir my_images/ --predict_output.output_dir runs/predictions
    python -m solo_lib analyse --config solo_lib/configs/cpu.yaml \
        --data.format coco --data.root my_images/ --data.annotation_file my.json
    python -m solo_lib export --ckpt_path best.ckpt --output model.onnx
    python -m solo_lib predict --config solo_lib/configs/cpu.yaml --onnx model.onnx \
        --data.predict_dir my_images/ --predict_output.output_dir runs/predictions

``analyse`` trains nothing: it reads the data set with the same YAML and options and
prints what the configuration does with its objects, and a proposal of input size and
grids (`solo_lib.data_report`). ``export`` writes the network as ONNX and its weights
alone (`solo_lib.export`). ``predict --onnx`` runs that file with onnxruntime over the
same images as ``predict --ckpt_path`` and writes the same files, without a trainer.

The model's `SOLOConfig` is the single source of truth: the data module receives
the same config, the trainer's ``max_epochs`` and the global seed are linked to it.
With ``--ckpt_path`` (or ``--onnx``), the checkpoint (the ONNX file) fixes the network
(`MODEL_FIELDS`) and the command line sets everything else: a longer schedule to resume,
another score threshold to predict.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import (
    ArgsType,
    LightningArgumentParser,
    LightningCLI,
    SaveConfigCallback,
)
from torch.utils.data import Subset

from solo_lib.config import MODEL_FIELDS, SOLOConfig
from solo_lib.data import SOLODataModule
from solo_lib.data_report import analyse_dataset, format_report
from solo_lib.hardware import fastest_precision
from solo_lib.module import LitSOLO
from solo_lib.prediction import PredictionWriter, ResultsWriter, write_predictions


class RunConfigCallback(SaveConfigCallback):
    """Lightning's `SaveConfigCallback`, writing ``config.yaml`` into the run's log folder only.

    Without a logger (``--trainer.logger false``, as notebooks validate and predict) the
    trainer's log folder is the current directory, and Lightning's callback would write,
    and overwrite, a ``config.yaml`` there. The config belongs beside a run's logs.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.logger is None:
            return
        super().setup(trainer, pl_module, stage)


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
        take_network_fields(
            self.config[subcommand]["model"]["config"],
            stored,
            self._given_fields,
            ("the checkpoint", ckpt_path),
        )

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


EXTRA_HELP = (
    "analyse: python -m solo_lib analyse --config FILE [--data.* ...] [--split val|all] "
    "[--min_mask_pixels N] prints "
    "object sizes, cells and mask pixels of the data set under the config, and proposes an "
    "input size and grids (solo_lib/data_report.py). export: python -m solo_lib export "
    "--ckpt_path CKPT --output model.onnx [--dynamic_batch] writes the network as ONNX "
    "(solo_lib/export.py). predict --onnx model.onnx [--config FILE] [--data.* ...] "
    "[--predict_output.* ...] predicts with onnxruntime instead of --ckpt_path."
)


def config_fields_given(args: ArgsType) -> set[str]:
    """The `SOLOConfig` fields that `args` set explicitly (``--model.config.FIELD``)."""
    if not isinstance(args, Sequence) or isinstance(args, str):
        return set()  # a dict or Namespace of arguments: nothing is singled out
    prefix = "--model.config."
    return {arg[len(prefix) :].split("=")[0] for arg in args if arg.startswith(prefix)}


def _plain(value: object) -> object:
    """`value` with lists turned into tuples, for comparing YAML/CLI and checkpoint values."""
    return tuple(value) if isinstance(value, list | tuple) else value


def take_network_fields(
    config: MutableMapping[str, Any],
    stored: Mapping[str, Any],
    given: set[str],
    source: tuple[str, str | os.PathLike],
) -> None:
    """Set the `MODEL_FIELDS` of the parsed `config` to those of `stored`, a trained network's
    config; the other fields stay as parsed.

    A network field `given` on the command line with another value than the stored one
    is an error that names both values and `source` (what, where: ``("the checkpoint",
    path)``): the network cannot run with it.
    """
    what, where = source
    for field in MODEL_FIELDS:
        if field not in stored:
            continue
        value, trained = _plain(config[field]), _plain(stored[field])
        if field in given and value != trained:
            raise ValueError(
                f"--model.config.{field} {value} conflicts with {what} {where}, "
                f"whose network was trained with {field} {trained}; leave it out to use "
                f"{what}'s"
            )
        config[field] = stored[field]


class TrainerlessCLI(SOLOCLI):
    """SOLOCLI's options and YAML parsed as one command (no subcommand), for the commands
    that build no trainer: there is no precision to choose."""

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        self._given_fields = config_fields_given(args)
        self.config = parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        """Nothing: without a trainer there is no precision to choose."""


class AnalyseCLI(TrainerlessCLI):
    """`analyse`: SOLOCLI's options and YAML, with `--split` and `--proposal_images`;
    it builds the config and the data module, no trainer."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--split",
            choices=("val", "all"),
            default="val",
            help="The validation split (the default) or all images, at the network's input.",
        )
        parser.add_argument(
            "--proposal_images",
            type=int,
            default=100,
            help="Images (evenly spaced) on which candidate settings are measured; 0: none.",
        )
        parser.add_argument(
            "--min_mask_pixels",
            type=float,
            default=16,
            help="Mask pixels the small objects (5th percentile) need in a proposed setting.",
        )

    def instantiate_classes(self) -> None:
        """The data module with its `SOLOConfig` only: no network (nor weights to load), no
        trainer."""
        cfg = SOLOConfig(**self.config["model"]["config"].as_dict())
        self.datamodule = SOLODataModule(cfg, **self.config["data"].as_dict())
        self.model = self.trainer = None


def analyse(args: list[str]) -> None:
    """`python -m solo_lib analyse [options]`: print `analyse_dataset`'s report."""
    cli = AnalyseCLI(LitSOLO, SOLODataModule, args=args, run=False)
    data = cli.datamodule
    start = time.monotonic()
    data.prepare_data()
    if cli.config["split"] == "all":
        dataset = data._dataset(train=False)  # the whole set at the input, without jitter
        if data.max_images is not None:
            dataset = Subset(dataset, range(min(len(dataset), data.max_images)))
    else:
        data.setup()
        dataset = data.val_dataset
    report = analyse_dataset(
        dataset,
        data.config,
        proposal_images=cli.config["proposal_images"],
        min_mask_pixels=cli.config["min_mask_pixels"],
    )
    split = "validation split" if cli.config["split"] == "val" else "all images"
    print(f"{split}: ", end="")
    print(format_report(report))
    print(f"analysed in {time.monotonic() - start:.1f} s", flush=True)


def export(args: list[str]) -> None:
    """`python -m solo_lib export --ckpt_path CKPT --output model.onnx [--dynamic_batch]`:
    the network as ONNX (`solo_lib.export`), checked against PyTorch on one image, and
    its weights alone beside it (``model.weights.ckpt``)."""
    import argparse

    from solo_lib.export import OnnxSOLO, export_onnx, save_weights

    parser = argparse.ArgumentParser(prog="python -m solo_lib export", description=export.__doc__)
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by fit")
    parser.add_argument("--output", required=True, help="the ONNX file to write")
    parser.add_argument("--dynamic_batch", action="store_true", help="a free batch dimension")
    options = parser.parse_args(args)
    if not Path(options.ckpt_path).is_file():
        parser.error(f"--ckpt_path {options.ckpt_path}: no such file")
    model = LitSOLO.load_from_checkpoint(options.ckpt_path, map_location="cpu", weights_only=True)
    network = model.model.eval()
    path = export_onnx(network, options.output, dynamic_batch=options.dynamic_batch)
    weights = save_weights(options.ckpt_path, path.with_suffix(".weights.ckpt"))
    images = torch.randn(1, 3, *network.cfg.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.cat([p.flatten() for p in sum(network(images).probabilities(), [])])
    got = torch.cat([p.flatten() for p in sum(OnnxSOLO(path).probabilities(images), [])])
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {weights} "
        f"({weights.stat().st_size / 1e6:.1f} MB); onnxruntime against PyTorch on a random "
        f"image: largest difference {float((got - expected).abs().max()):.1e}",
        flush=True,
    )


class OnnxPredictCLI(TrainerlessCLI):
    """`predict --onnx FILE`: SOLOCLI's options and YAML; the ONNX file (`OnnxSOLO`) gives the
    network, the data module the images, `ResultsWriter` the files; no trainer."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--onnx", required=True, help="An ONNX file written by `python -m solo_lib export`."
        )
        parser.add_argument(
            "--ckpt_path",
            default=None,
            help="Refused with --onnx, which is the network: leave --onnx out to predict "
            "with a checkpoint.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        if self.config["ckpt_path"] is not None:
            parser.error(
                f"--onnx {self.config['onnx']} and --ckpt_path {self.config['ckpt_path']}: "
                "give one; --onnx predicts with onnxruntime, --ckpt_path with PyTorch"
            )

    def instantiate_classes(self) -> None:
        """The network from the ONNX file; the config of the file's network with the
        command line's other fields, as ``--ckpt_path`` gives it (`take_network_fields`)."""
        from solo_lib.export import OnnxSOLO

        self.runtime = OnnxSOLO(self.config["onnx"])
        config = self.config["model"]["config"]
        stored = dataclasses.asdict(self.runtime.cfg)
        take_network_fields(
            config, stored, self._given_fields, ("the ONNX file", self.config["onnx"])
        )
        cfg = SOLOConfig(**config.as_dict())
        self.runtime.cfg = cfg  # the same network fields; post-processing reads the others
        self.datamodule = SOLODataModule(cfg, **self.config["data"].as_dict())
        self.writer = ResultsWriter(**self.config["predict_output"].as_dict())
        self.model = self.trainer = None


def predict_onnx(args: list[str]) -> None:
    """`python -m solo_lib predict --onnx model.onnx [options]`: ``predict`` with onnxruntime.

    The same images (``--data.predict_dir`` or the validation split) and the same files
    (``results.json``, overlays) as ``predict --ckpt_path``, in one process.
    """
    cli = OnnxPredictCLI(LitSOLO, SOLODataModule, args=args, run=False)
    data, cfg = cli.datamodule, cli.runtime.cfg
    data.prepare_data()
    data.setup("predict")
    # As `LitSOLO.setup`: a COCO validation set's category ids when the network has none.
    cfg.category_ids = cfg.category_ids or data.category_ids
    loader = data.predict_dataloader()
    write_predictions(cli.runtime.predict, loader, cli.writer, cfg, len(loader.dataset))


def main(args: list[str] | None = None) -> None:
    """Run the command line with `args` (default: sys.argv); ``analyse``, ``export`` and
    ``predict --onnx`` are ours, the rest LightningCLI's."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["analyse"]:
        analyse(argv[1:])
        return
    if argv[:1] == ["export"]:
        export(argv[1:])
        return
    if argv[:1] == ["predict"] and any(a == "--onnx" or a.startswith("--onnx=") for a in argv):
        predict_onnx(argv[1:])
        return
    SOLOCLI(
        LitSOLO,
        SOLODataModule,
        args=args,
        save_config_callback=RunConfigCallback,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"epilog": EXTRA_HELP},
    )
