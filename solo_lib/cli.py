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
``analyse`` and ``export`` say what they are doing on stderr (status lines; tqdm bars over
``analyse``'s images and candidate settings) and print their results alone on stdout.

The model's `SOLOConfig` is the single source of truth: the data module receives
the same config, the trainer's ``max_epochs`` and the global seed are linked to it.
With ``--ckpt_path`` (or ``--onnx``), the checkpoint (the ONNX file) fixes the network
(`MODEL_FIELDS`) and the command line sets everything else: a longer schedule to resume,
another score threshold to predict. ``validate``, ``test`` and ``predict`` need a
trained network: ``--ckpt_path`` (or ``predict --onnx``); without it they stop.

Errors in what the user gave (a config value out of range, a data file of the wrong form,
a missing file, a file that is not a checkpoint, a network field that contradicts the
checkpoint: `REFUSALS`) are printed as one line, ``error: <message>``, on stderr, and
the command exits with 2; other exceptions (bugs) keep their traceback. Set the
environment variable ``SOLO_TRACEBACK=1`` for the traceback of a refusal too.
``export`` exits with 1 when onnxruntime's probabilities differ from PyTorch's by more
than `solo_lib.export.TOLERANCE`, and then leaves no file behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import (
    ArgsType,
    LightningArgumentParser,
    LightningCLI,
    SaveConfigCallback,
)
from torch.utils.data import Subset

from solo_lib.atomic import atomic_file
from solo_lib.config import MODEL_FIELDS, SOLOConfig
from solo_lib.data import DataFormatError, SOLODataModule
from solo_lib.data.synthetic.cache import MODES
from solo_lib.data_report import (
    GRID_FACTORS,
    analyse_dataset,
    format_report,
    proposal_subset,
    search_order,
)
from solo_lib.export import (
    TOLERANCE,
    OnnxSOLO,
    export_onnx,
    largest_difference,
    read_checkpoint,
    save_weights,
)
from solo_lib.hardware import fastest_precision
from solo_lib.module import LitSOLO
from solo_lib.prediction import PredictionWriter, ResultsWriter, write_predictions
from solo_lib.schedule import TimeBudget, why_the_fit_ended


class CommandError(Exception):
    """A command stopped on purpose, with a message that says why: `main` prints the
    message alone (no traceback) and exits with `exit_code`."""

    exit_code = 1


class UserInputError(CommandError, ValueError):
    """What the user gave (an option, a config value, a file) cannot be used: a usage error,
    exit code 2. A ValueError, as the checks it stands for (`user_input`) raise."""

    exit_code = 2


#: The exceptions `main` prints as one line without a traceback: refusals of the user's
#: input (data files of the wrong form and missing files among them). Any other is a bug.
REFUSALS = (CommandError, DataFormatError, FileNotFoundError)
#: Set to 1 in the environment for the traceback of a refusal as well.
TRACEBACK_VARIABLE = "SOLO_TRACEBACK"

#: The subcommands that run a trained network, and what they say without ``--ckpt_path``:
#: with the initial weights they would report an AP near 0 or no instance, as if that
#: were the model's.
NEEDS_CHECKPOINT = {
    "validate": "validate needs --ckpt_path CKPT (a checkpoint written by fit): without "
    "one it would evaluate the untrained network",
    "test": "test needs --ckpt_path CKPT (a checkpoint written by fit): without one it "
    "would evaluate the untrained network",
    "predict": "predict needs --ckpt_path CKPT (a checkpoint written by fit) or --onnx FILE "
    "(written by export): without either it would predict with the untrained network",
}


@contextlib.contextmanager
def user_input(prefix: str = "") -> Iterator[None]:
    """Re-raise the ValueErrors and FileNotFoundErrors of the block as `UserInputError`,
    their message after `prefix` (the option that gave the value, e.g. ``"--ckpt_path "``).

    For checks of the user's values in code that raises plain ValueErrors (`SOLOConfig`,
    `SOLODataModule`, `OnnxSOLO`, `read_checkpoint`): only around them, so that a
    ValueError of a bug elsewhere keeps its traceback.
    """
    try:
        yield
    except UserInputError:
        raise
    except (ValueError, FileNotFoundError) as err:
        raise UserInputError(f"{prefix}{err}") from err


def described_objects(config: Mapping[str, Any]) -> tuple[SOLOConfig, SOLODataModule]:
    """The `SOLOConfig` and the data module that the parsed options `config` describe
    (``model.config``, ``data``); their checks' errors are the user's (`user_input`)."""
    with user_input("model.config: "):
        cfg = SOLOConfig(**config["model"]["config"].as_dict())
    with user_input("data: "):
        data = SOLODataModule(cfg, **config["data"].as_dict())
    return cfg, data


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
        # None (a time budget without a cap) is Lightning's -1, no limit: its None is 1000.
        parser.link_arguments(
            "model.config.max_epochs",
            "trainer.max_epochs",
            compute_fn=lambda epochs: -1 if epochs is None else epochs,
        )
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
        A missing file or one that is not a checkpoint stops it here, before any data
        is read (`read_checkpoint`); so do `NEEDS_CHECKPOINT` without one.
        """
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path:
            if subcommand in NEEDS_CHECKPOINT:
                raise UserInputError(NEEDS_CHECKPOINT[subcommand])
            return
        with user_input("--ckpt_path "):
            checkpoint = read_checkpoint(ckpt_path)
        stored = checkpoint["hyper_parameters"].get("config")
        if not stored:
            return
        take_network_fields(
            self.config[subcommand]["model"]["config"],
            stored,
            self._given_fields,
            ("the checkpoint", ckpt_path),
        )

    def instantiate_classes(self) -> None:
        """Lightning's, once `described_objects` has checked the config and the data
        options: their errors are then the user's, without a traceback."""
        described_objects(self.config[self.subcommand] if self.subcommand else self.config)
        super().instantiate_classes()

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
        and the epoch it belongs to, what ended the run when it was not the plan or the
        budget, and where the checkpoints are."""
        trainer, model = self.trainer, self.model
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        minutes = (time.monotonic() - self._fit_start) / 60
        steps_now = trainer.global_step - model.first_step
        lines = [
            f"trained {trainer.current_epoch} epochs ({trainer.global_step} steps); this run: "
            f"{steps_now} steps in {minutes:.1f} min"
        ]
        if model.map_epoch is not None and "val/AP" in metrics:
            lines.append(
                f"validation mask AP {float(metrics['val/AP']):.3f}, "
                f"AP50 {float(metrics['val/AP50']):.3f}, AP75 {float(metrics['val/AP75']):.3f} "
                f"(epoch {model.map_epoch})"
            )
        budget = next((c for c in trainer.callbacks if isinstance(c, TimeBudget)), None)
        lines += why_the_fit_ended(trainer, budget, steps_now)
        for checkpoint in trainer.checkpoint_callbacks:
            if checkpoint.monitor is not None and checkpoint.best_model_path:
                score = checkpoint.best_model_score
                scored = f" ({checkpoint.monitor} {float(score):.3f})" if score is not None else ""
                lines.append(f"best checkpoint: {checkpoint.best_model_path}{scored}")
            last = checkpoint.last_model_path or (
                checkpoint.best_model_path if checkpoint.monitor is None else ""
            )
            if last:
                lines.append(f"last checkpoint: {last}")
        print("\n".join(lines), flush=True)


EXTRA_HELP = (
    "analyse: python -m solo_lib analyse --config FILE [--data.* ...] [--split val|all] "
    "[--min_mask_pixels N] prints "
    "object sizes, cells and mask pixels of the data set under the config, and proposes an "
    "input size and grids (solo_lib/data_report.py). export: python -m solo_lib export "
    "--ckpt_path CKPT --output model.onnx [--dynamic_batch] writes the network as ONNX "
    "(solo_lib/export.py), or nothing and exits with 1 when onnxruntime differs from PyTorch "
    f"by more than {TOLERANCE:.0e}. predict --onnx model.onnx [--config FILE] [--data.* ...] "
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
    is an error (`UserInputError`) that names both values and `source` (what, where:
    ``("the checkpoint", path)``): the network cannot run with it.
    """
    what, where = source
    for field in MODEL_FIELDS:
        if field not in stored:
            continue
        value, trained = _plain(config[field]), _plain(stored[field])
        if field in given and value != trained:
            raise UserInputError(
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
        _, self.datamodule = described_objects(self.config)
        self.model = self.trainer = None


def _data_source(data: SOLODataModule) -> str:
    """Where `data` reads its images from, in words (for a status line)."""
    if data.format == "coco":
        return str(data.annotation_file)
    if data.root is None:
        return f"the built-in {data.builtin!r} set in {MODES[data.builtin].root}"
    return str(data.root)


def analyse(args: list[str]) -> None:
    """`python -m solo_lib analyse [options]`: print `analyse_dataset`'s report.

    A status line on stderr says what it reads and measures, and tqdm bars there follow
    the images read, then the candidate settings measured; stdout holds the report.
    """
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
    cfg, proposal_images = data.config, cli.config["proposal_images"]
    status = (
        f"analyse: measuring the objects of {len(dataset)} images "
        f"({'the validation split' if cli.config['split'] == 'val' else 'all images'} of "
        f"{_data_source(data)}, read as fit reads them) at the input "
        f"{cfg.image_size[0]}x{cfg.image_size[1]} with grids {' '.join(map(str, cfg.num_grids))}"
    )
    if proposal_images > 0 and len(dataset):
        status += (
            f"; then, for a proposal, up to {len(search_order(cfg)) * len(GRID_FACTORS)} "
            f"larger inputs and finer grids on "
            f"{len(proposal_subset(len(dataset), proposal_images))} of them"
        )
    print(status, file=sys.stderr, flush=True)  # a status, not a result
    with user_input():  # a data set without objects
        report = analyse_dataset(
            dataset,
            cfg,
            proposal_images=proposal_images,
            min_mask_pixels=cli.config["min_mask_pixels"],
            progress=True,
        )
    split = "validation split" if cli.config["split"] == "val" else "all images"
    print(f"{split}: ", end="")
    print(format_report(report))
    print(f"analysed in {time.monotonic() - start:.1f} s", flush=True)


def export(args: list[str]) -> None:
    """`python -m solo_lib export --ckpt_path CKPT --output model.onnx [--dynamic_batch]`:
    the network as ONNX (`solo_lib.export`), checked against PyTorch on one image, and
    its weights alone beside it (``model.weights.ckpt``).

    Both files are written under temporary names and moved into place only once the
    check passes: above `TOLERANCE` the command stops (`CommandError`) and leaves neither.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m solo_lib export", description=export.__doc__)
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by fit")
    parser.add_argument("--output", required=True, help="the ONNX file to write")
    parser.add_argument("--dynamic_batch", action="store_true", help="a free batch dimension")
    options = parser.parse_args(args)
    with user_input("--ckpt_path "):
        read_checkpoint(options.ckpt_path)
    model = LitSOLO.load_from_checkpoint(options.ckpt_path, map_location="cpu", weights_only=True)
    network = model.model.eval()
    path = Path(options.output)
    (h, w), batch = network.cfg.image_size, "free batch" if options.dynamic_batch else "batch 1"
    with atomic_file(path) as unchecked:
        print(  # statuses, not results: on stderr
            f"export: writing the network of {options.ckpt_path} ({network.cfg.name}, input "
            f"{h}x{w}, {batch}) as ONNX with torch.onnx (dynamo)",
            file=sys.stderr,
            flush=True,
        )
        export_onnx(network, unchecked, dynamic_batch=options.dynamic_batch)
        print(
            f"export: checking {path} with onnxruntime against PyTorch on a random image "
            f"(tolerance {TOLERANCE:.0e})",
            file=sys.stderr,
            flush=True,
        )
        difference = largest_difference(network, unchecked)
        if not difference <= TOLERANCE:  # NaN too
            raise CommandError(
                f"onnxruntime's probabilities differ from PyTorch's by up to {difference:.1e} "
                f"on a random image, above the tolerance {TOLERANCE:.0e}: the export computes "
                f"another network; {path} and its weights were not written"
            )
        weights = save_weights(options.ckpt_path, path.with_suffix(".weights.ckpt"))
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {weights} "
        f"({weights.stat().st_size / 1e6:.1f} MB); onnxruntime against PyTorch on a random "
        f"image: largest difference {difference:.1e} (tolerance {TOLERANCE:.0e})",
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
        with user_input("--onnx "):
            self.runtime = OnnxSOLO(self.config["onnx"])
        stored = dataclasses.asdict(self.runtime.cfg)
        take_network_fields(
            self.config["model"]["config"],
            stored,
            self._given_fields,
            ("the ONNX file", self.config["onnx"]),
        )
        # the same network fields; post-processing reads the others
        self.runtime.cfg, self.datamodule = described_objects(self.config)
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
    """Run the command line with `args` (default: sys.argv).

    A refusal (`REFUSALS`) is printed as ``error: <message>`` on stderr, without its
    traceback unless ``SOLO_TRACEBACK=1``, and exits (SystemExit) with its exit code:
    2 for the user's input, 1 for an export that fails its check.
    """
    try:
        run_command(args)
    except REFUSALS as err:
        if os.environ.get(TRACEBACK_VARIABLE, "0") not in ("", "0"):
            raise
        print(
            f"error: {err} (set {TRACEBACK_VARIABLE}=1 for the traceback)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(getattr(err, "exit_code", UserInputError.exit_code)) from None


def run_command(args: list[str] | None = None) -> None:
    """Run the command of `args` (default: sys.argv): ``analyse``, ``export`` and
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
