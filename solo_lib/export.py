"""SOLO as an ONNX file, run with onnxruntime, and a weights-only checkpoint to share.

The ONNX graph holds the network up to the category probabilities and the tensors that
masks are made from: one input, ``images`` (B, 3, H, W) normalised and padded as the
data sets make them, at the config's static input size; outputs ``category_<l>``
(B, C, S, S) probabilities per level, then per level the fields of its mask maker
(`solo_lib.model.mask_makers`), ``masks_<l>_<field>``: vanilla SOLO's and SOLOv2's
``features`` (B, E, h, w), ``kernels`` (1 or B, S^2, E) and ``bias``, Decoupled SOLO's
``x`` and ``y`` (B, S, h, w) logits. No cell's mask is made in the graph: post-processing
makes the candidates' only (`solo_lib.postprocess`), and the outputs are a fraction of
the S^2 masks of every level. Post-processing (points NMS, score threshold, masks,
maskness, Matrix NMS, top-k, masks back to the original image) is not in the graph: it
is data-dependent control flow that ONNX exporters handle poorly, and `OnnxSOLO.predict`
applies the very same code to onnxruntime's outputs. The config travels inside the
ONNX file (metadata ``solo_config``, JSON), so the file alone is enough to predict:
``python -m solo_lib predict --onnx model.onnx`` does (`solo_lib.cli`). ``python -m
solo_lib export`` keeps a file only when onnxruntime computes PyTorch's probabilities to
`TOLERANCE` (`largest_difference`), and reads checkpoints with `read_checkpoint`, which
names a file that is not one.

There is no float16 export: onnxruntime's CPU provider ran a float16 graph of the cpu
preset no faster than the float32 one (144 against 137 ms, one thread), so it would
halve the file and cost accuracy for nothing on the machines this course targets.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from solo_lib.atomic import atomic_file
from solo_lib.config import SOLOConfig
from solo_lib.model import SOLO
from solo_lib.model.mask_makers import MaskMaker, maker_type

#: ONNX opset of the exported graph (onnxruntime 1.17 and later run it).
OPSET = 18
CONFIG_KEY = "solo_config"
#: What a checkpoint written by `fit` holds and `read_checkpoint` requires.
CHECKPOINT_KEYS = ("state_dict", "hyper_parameters")
#: Largest difference of probabilities between onnxruntime and PyTorch that an export may
#: show (`largest_difference`); the parity tests (tests/test_export.py) hold it too.
TOLERANCE = 1e-4


def output_names(cfg: SOLOConfig) -> list[str]:
    """``category_0 .. category_{L-1}``, then ``masks_<l>_<field>`` for every level and
    field of its mask maker (``masks_0_x``, ``masks_0_y``, ...): the graph's outputs."""
    levels = range(cfg.num_levels)
    fields = maker_type(cfg).FIELDS
    return [f"category_{lv}" for lv in levels] + [
        f"masks_{lv}_{field}" for lv in levels for field in fields
    ]


class ProbabilityNet(nn.Module):
    """SOLO up to its category probabilities and mask makers' tensors, as a flat tuple
    (what an ONNX graph can output)."""

    def __init__(self, model: SOLO) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        parts = self.model.mask_makers(images)
        expected = maker_type(self.model.cfg)  # the kind whose FIELDS name the outputs
        if any(type(maker) is not expected for maker in parts.makers):
            found = sorted({type(maker).__name__ for maker in parts.makers})
            raise TypeError(f"ProbabilityNet: the head made {found}, expected {expected.__name__}")
        fields = [tensor.float() for maker in parts.makers for tensor in maker.tensors()]
        return (*parts.category_probabilities(), *fields)


def dense_probabilities(category: list[Tensor], makers: list[MaskMaker]) -> Tensor:
    """Category probabilities and every cell's mask probabilities, flat: what two runs of
    one network must agree on (`largest_difference`)."""
    masks = [maker.dense().float().sigmoid() for maker in makers]
    return torch.cat([p.flatten() for p in [*category, *masks]])


def export_onnx(
    model: SOLO, path: str | os.PathLike, batch_size: int = 1, dynamic_batch: bool = False
) -> Path:
    """Write `model` (in eval mode) as ONNX to `path`, atomically; return the path.

    The input is (batch_size, 3, H, W) with (H, W) = ``model.cfg.image_size``; with
    `dynamic_batch` the batch dimension is free. The `SOLOConfig` is stored in the file.
    """
    cfg = model.cfg
    net = ProbabilityNet(model).eval()
    # torch.export specialises a dimension traced at size 1 (and guards the cpu preset's
    # batch to <= 2 when traced at 1): a free batch is traced from an example of 2.
    example = torch.zeros(max(batch_size, 2) if dynamic_batch else batch_size, 3, *cfg.image_size)
    dynamic = {"images": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=output_names(cfg),
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            verbose=False,
        )
    program.model.metadata_props[CONFIG_KEY] = json.dumps(dataclasses.asdict(cfg))
    with atomic_file(path) as tmp:
        program.save(tmp)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at `path`, loaded as `fit` writes them (``weights_only``: no code runs).

    A file that is not one fails deep in the unpickler (a text file: ``KeyError: 101``):
    here it is a ValueError that names the file, and a missing file a FileNotFoundError.
    A checkpoint needs the network's weights and its config (`CHECKPOINT_KEYS`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected a checkpoint written by fit")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler's: KeyError, UnpicklingError, EOFError, ...
        reason = str(err).partition("\n")[0]  # weights_only's refusals run to paragraphs
        raise ValueError(
            f"{path} is not a checkpoint written by fit (torch.load cannot read it: "
            f"{type(err).__name__}: {reason})"
        ) from err
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f"{path} is not a checkpoint written by fit (a {type(checkpoint).__name__}, not a dict)"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"{path} is not a checkpoint written by fit (no {missing})")
    return checkpoint


def save_weights(checkpoint_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """A checkpoint of the network alone, fit for sharing: its weights and its config.

    Training checkpoints also hold the optimiser state (most of their size). This one
    loads as they do, with ``LitSOLO.load_from_checkpoint(path, weights_only=True)``
    or ``--ckpt_path``, and is written atomically.
    """
    checkpoint = read_checkpoint(checkpoint_path)
    keep = (*CHECKPOINT_KEYS, "pytorch-lightning_version")
    weights = {key: checkpoint[key] for key in keep if key in checkpoint}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(weights, tmp)
    return path


def largest_difference(model: SOLO, path: str | os.PathLike) -> float:
    """The largest difference between the probabilities (category and mask, every level)
    of `model` (in eval mode) and of its ONNX file at `path`, on one random image. Every
    cell's mask is made here, from each side's mask makers, so that every output counts.

    ``python -m solo_lib export`` refuses an export above `TOLERANCE`: an exporter or
    runtime that computes another network must not leave a file behind.
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, *model.cfg.image_size, generator=generator)
    with torch.no_grad():
        parts = model.mask_makers(images)
        expected = dense_probabilities(parts.category_probabilities(), parts.makers)
    got = dense_probabilities(*OnnxSOLO(path).outputs(images))
    return float((got - expected).abs().max())


class OnnxSOLO:
    """An exported SOLO run by onnxruntime: the same `probabilities` and `predict` as `SOLO`.

    Needs onnxruntime and torch (for post-processing), not Lightning. A file that is not
    a SOLO export (not ONNX, no stored config, other inputs or outputs) is refused with a
    ValueError that names the file and what it lacks.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort  # imported here: only this class needs it

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; expected an ONNX file of SOLO")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        # onnxruntime's workers spin after each run by default, waiting for the next one;
        # here the next work is post-processing in torch, on the same cores, which the
        # spinning threads slow down (measured 1.5-6x per stage on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime's load errors derive from Exception alone
            raise ValueError(f"{path}: not an ONNX model that onnxruntime loads ({err})") from err
        meta = self.session.get_modelmeta().custom_metadata_map
        if CONFIG_KEY not in meta:
            raise ValueError(
                f"{path}: not a SOLO export: no {CONFIG_KEY!r} metadata (the config that "
                "`python -m solo_lib export` stores); export the checkpoint with it"
            )
        self.cfg = SOLOConfig(**json.loads(meta[CONFIG_KEY]))
        inputs = {node.name: node.shape for node in self.session.get_inputs()}
        outputs = [node.name for node in self.session.get_outputs()]
        missing = [name for name in ["images"] if name not in inputs]
        missing += [name for name in output_names(self.cfg) if name not in outputs]
        if missing:
            raise ValueError(f"{path}: not a SOLO export: no input or output named {missing}")
        batch = inputs["images"][0]  # an int, or the name of a free dimension
        self.batch_size: int | None = batch if isinstance(batch, int) else None
        """The graph's fixed batch size; None when it is free (``--dynamic_batch``)."""

    def _run(self, images: Tensor) -> list[np.ndarray]:
        """The graph's outputs for at most `batch_size` images (n, 3, H, W).

        A fixed-batch graph gets its batch filled with zero images, whose rows are dropped
        (a field shared by the batch, vanilla SOLO's kernels, has one row and keeps it).
        """
        n = images.shape[0]
        if self.batch_size is not None and n < self.batch_size:
            images = torch.cat([images, images.new_zeros(self.batch_size - n, *images.shape[1:])])
        outputs = self.session.run(None, {"images": images.float().numpy()})
        return [out[:n] for out in outputs]

    def outputs(self, images: Tensor) -> tuple[list[Tensor], list[MaskMaker]]:
        """Category probabilities (B, C, S, S) and a mask maker per level for `images`
        (B, 3, H, W), B at most the graph's batch size (any, when it is free)."""
        expected = (3, *self.cfg.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected or images.shape[0] == 0:
            raise ValueError(
                f"images must be (B, {expected}) with B > 0, got {tuple(images.shape)}"
            )
        if self.batch_size is not None and images.shape[0] > self.batch_size:
            raise ValueError(
                f"images: {images.shape[0]} images for a graph of batch {self.batch_size}; "
                "`predict` runs any number, a batch at a time"
            )
        tensors = [torch.from_numpy(out) for out in self._run(images)]
        levels = self.cfg.num_levels
        maker = maker_type(self.cfg)
        fields = len(maker.FIELDS)
        makers = [
            maker(*tensors[levels + level * fields : levels + (level + 1) * fields])
            for level in range(levels)
        ]
        return tensors[:levels], makers

    def predict(
        self,
        images: Tensor,
        metas: list[dict],
        score_threshold: float | None = None,
        mask_threshold: float | None = None,
    ) -> list[dict]:
        """Instances per image, exactly as `SOLO.predict` makes them (`postprocess`): any
        number of images, run a graph batch at a time."""
        from solo_lib.postprocess import postprocess

        if len(metas) != images.shape[0]:
            raise ValueError(f"predict: {len(metas)} metas for {images.shape[0]} images")
        step = self.batch_size or max(images.shape[0], 1)
        instances: list[dict] = []
        for i in range(0, images.shape[0], step):
            category, makers = self.outputs(images[i : i + step])
            instances += postprocess(
                category, makers, metas[i : i + step], self.cfg, score_threshold, mask_threshold
            )
        return instances
