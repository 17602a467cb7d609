"""One typed configuration for SOLO and SOLOv2, with their presets.

`SOLOConfig.paper()` carries every number of the SOLO paper (arXiv 1912.04488)
as used on the CIS 680 data; `SOLOConfig.cpu()` is a small model that trains
on a laptop CPU in minutes; `solov2_paper()` and `solov2_cpu()` are the same two
with SOLOv2's head (arXiv 2003.10152, `solo_lib.model.solov2`); `dense()` is the cpu
preset for small touching objects and `gpu()` the cpu preset's recipe grown for one
GPU. The presets are the source of the YAML files in solo_lib/configs/, which
`python -m solo_lib.presets` generates from them (`solo_lib.presets`). Everything that
depends on the input size (scale ranges, feature sizes, padding) is derived here,
never typed in twice.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

#: Height, in input pixels, that the paper's scale ranges refer to.
REFERENCE_HEIGHT = 800

#: The paper's scale ranges on sqrt(w * h) of an object, at 800 px input height.
PAPER_SCALE_RANGES: tuple[tuple[float, float], ...] = (
    (1.0, 96.0),
    (48.0, 192.0),
    (96.0, 384.0),
    (192.0, 768.0),
    (384.0, 2048.0),
)


#: The fields that define a trained network and the input it expects. A checkpoint
#: fixes them; every other field (thresholds, schedule, data loading) may change
#: between training and use (`solo_lib.cli`).
MODEL_FIELDS = (
    "num_classes",
    "class_names",
    "category_ids",
    "image_size",
    "pixel_mean",
    "pixel_std",
    "backbone_depth",
    "backbone_width",
    "fpn_channels",
    "head_channels",
    "num_stacked_convs",
    "mask_head",
    "head",
    "kernel_channels",
    "mask_branch_channels",
    "strides",
    "num_grids",
)


#: The presets, by name: each is the `SOLOConfig` classmethod of that name
#: (`SOLOConfig.preset`), and solo_lib/configs/<name>.yaml is generated from it
#: (`solo_lib.presets`).
PRESETS = ("paper", "cpu", "dense", "solov2_paper", "solov2_cpu", "gpu")


def fast_mode() -> bool:
    """True when ``SOLO_FAST=1``: the test suite's short runs (fewer steps and images)."""
    return os.environ.get("SOLO_FAST", "0") not in ("", "0", "false", "False")


@dataclass
class SOLOConfig:
    """Every setting of a SOLO run: data, model, targets, loss, post-processing, schedule."""

    name: str = "paper"

    # --- data -------------------------------------------------------------
    num_classes: int = 3
    """C, the number of foreground classes; labels are 1..C and 0 is background."""
    class_names: tuple[str, ...] = ("vehicle", "person", "animal")
    category_ids: tuple[int, ...] | None = None
    """COCO category ids of labels 1..C; None: the label is the id. Training on a COCO
    file fills it from the file (sorted ids), so that checkpoints and results keep them."""
    image_size: tuple[int, int] = (800, 1088)
    """(H, W) of the network input: images are resized to fit, then zero-padded."""
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    hflip_prob: float = 0.5
    scale_jitter: tuple[float, float] = (0.8, 1.0)
    """Training-time random resize factor range, applied before padding."""
    copy_paste_prob: float = 0.0
    """Probability that a training image receives objects of another image of its batch
    (Simple Copy-Paste, `solo_lib.data.copy_paste`); 0: off, as in the paper."""
    val_fraction: float = 0.2
    batch_size: int = 16
    """Images per device and step."""
    num_workers: int = 2
    seed: int = 0

    # --- model ------------------------------------------------------------
    backbone_depth: int = 50
    backbone_width: int = 64
    """Channels of the trunk's first stage (then x2 per stage); 64 is torchvision's ResNet.
    Other widths only from scratch (`solo_lib.model.backbone.narrow_resnet`)."""
    pretrained: str | None = None
    """None (train from scratch), "imagenet" (torchvision weights) or a path to a state dict."""
    channels_last: bool = False
    """Convolutions in channels-last memory layout: faster with oneDNN on CPUs with AMX
    (11 % in float32, 1.6x on top of bf16, measured), no change elsewhere."""
    fpn_channels: int = 256
    head_channels: int = 256
    num_stacked_convs: int = 7
    mask_head: str = "vanilla"
    """"vanilla": one 1x1 conv to S^2 mask channels per level, a weight vector per cell.
    "decoupled" (Decoupled SOLO, the same paper): an X and a Y branch of S channels
    each, the mask of cell (row i, column j) is sigmoid(X_j) * sigmoid(Y_i)
    (`solo_lib.model.heads`). Only for ``head = "solo"``."""
    head: str = "solo"
    """"solo": SOLO's head, masks from S^2 outputs per level (`solo_lib.model.heads`).
    "solov2": SOLOv2's dynamic head, each cell predicts a 1x1 kernel that is applied to
    one mask feature map shared by all levels (`solo_lib.model.solov2`)."""
    kernel_channels: int = 256
    """SOLOv2's E: channels of the unified mask features, and so the length D = E of each
    cell's 1x1 dynamic kernel (256 in the paper, 128 in SOLOv2-Light). Only for "solov2"."""
    mask_branch_channels: int = 128
    """Width of SOLOv2's unified mask feature branch before its 1x1 conv to E channels
    (128 in the official code). Only for "solov2"."""
    strides: tuple[int, ...] = (8, 8, 16, 32, 32)
    num_grids: tuple[int, ...] = (40, 36, 24, 16, 12)

    # --- targets ----------------------------------------------------------
    center_epsilon: float = 0.2

    # --- loss -------------------------------------------------------------
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cate_loss_weight: float = 1.0
    mask_loss_weight: float = 3.0

    # --- post-processing --------------------------------------------------
    score_threshold: float = 0.1
    mask_threshold: float = 0.5
    """Mask probability at which a pixel belongs to the mask (maskness, Matrix NMS, the
    final masks). The paper's 0.5; the cpu preset's Decoupled SOLO masks are a product of
    two probabilities, low at the outlines, and 0.4 suits them (`SOLOConfig.cpu`)."""
    min_mask_area: int | None = None
    """Masks of at most this many pixels (above ``mask_threshold``, at the level-0 mask
    size) are dropped before maskness. None: the candidate's level's stride, as SOLO's
    code. On small objects the stride drops correct masks too: a 10-pixel object is about
    2 x 2 pixels of a mask at stride 4 (notebook 06 measures what that costs)."""
    nms_pre: int = 500
    update_threshold: float = 0.05
    max_per_img: int = 100
    """Instances kept per image, as COCOeval's ``maxDets`` (100): an image of more objects
    cannot have all of them found, whatever the network."""
    nms_kernel: str = "gaussian"
    nms_sigma: float = 2.0

    # --- schedule ---------------------------------------------------------
    optimizer: str = "sgd"
    """"sgd" (SGD with momentum, the paper's) or "adamw" (momentum is then AdamW's beta1)."""
    base_lr: float = 0.01
    base_batch_size: int = 16
    """The batch size that `base_lr` belongs to: lr = base_lr * total batch / base_batch_size."""
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_epochs: int | None = 36
    """Epochs to train; with `time_budget_min`, the most epochs the budget may give (None:
    as many as fit, the budget alone decides)."""
    time_budget_min: float | None = None
    """Wall-clock minutes for training: the epochs are timed and their number set to what
    fits (`solo_lib.schedule.TimeBudget`). None trains exactly `max_epochs`."""
    lr_schedule: str = "step"
    """"step" (x `lr_gamma` at each of `lr_milestones`) or "cosine" (down to 0 at the end)."""
    lr_milestones: tuple[int, ...] = (27, 33)
    """Epochs at which "step" decay multiplies the learning rate by `lr_gamma`."""
    lr_gamma: float = 0.1
    warmup_iters: int = 500
    warmup_ratio: float = 0.01
    grad_clip_norm: float = 35.0
    map_every_n_epochs: int = 1

    # --- presets ----------------------------------------------------------
    @classmethod
    def paper(cls) -> SOLOConfig:
        """The SOLO paper's settings: 800x1088 input, ResNet-50 FPN, 36-epoch schedule."""
        return cls()

    @classmethod
    def cpu(cls) -> SOLOConfig:
        """A small SOLO that trains on a 2-core CPU in 20 minutes, data generation included.

        256 px high input (the 300x400 images become 256x341, padded to 352), a
        ResNet-10 trunk (ResNet-18 with one block per stage) at a quarter width (16 to
        128 channels), 32-channel FPN and heads with 2 stacked convs, Decoupled SOLO's
        mask branch, coarser grids; scale ranges follow from the input height. Batch 4
        at a rate of 0.002 per step; mask AP every second epoch.

        Chosen by full 20-minute runs on a 2-core AMD EPYC without bf16 instructions
        (benchmarks/RESULTS.md, "Levers for the 20-minute CPU run"): in that budget the
        model is short of steps, not of capacity. Half the width makes a step 2.6x
        cheaper and lifted the final mask AP50 from 0.038 (ResNet-10 at full width, 500
        steps) to 0.111 (1,100 steps); half the batch at the same rate per step gave
        twice the steps again and 0.170; twice the rate per step, 0.213 (four times: no
        better). Decoupled SOLO's X and Y mask branches learn faster per epoch than
        one weight vector per cell (AP50 0.239 against 0.172 after 9 epochs), and a
        trunk at a quarter width learns as fast per epoch as at half width, with 1.7x
        cheaper steps: 16 epochs and AP50 0.350. The masks still start at the 0.01
        prior: starting them at 0.5 learned more slowly; GroupNorm with 8 channels per
        group, 4 stacked convs instead of 2, level 0 at stride 4 and a centre region of
        0.5 instead of 0.2 were no better per epoch, nor was pasting objects between
        the images of a batch (`copy_paste_prob`). Mask AP (post-processing and COCO
        evaluation, a quarter of an epoch's time) runs on every second epoch and the
        last; the validation losses on every epoch. Masks are cut at probability 0.4,
        not 0.5: a decoupled mask is the product of two probabilities, and at an
        object's outline two factors of 0.7 give 0.49 (on two trained models, AP50
        0.402 against 0.373 and 0.361 against 0.338; 0.35 and 0.45 were between).

        The schedule fits a time budget: `time_budget_min` sets the number of epochs
        from the duration of the epochs so far (no cap: `max_epochs` None), and the cosine
        decay ends at the last step whatever the machine's speed. AdamW instead of the
        paper's SGD: from scratch and for a run of minutes it learns markedly faster
        (measured on the built-in set after 2 epochs: validation dice 0.62 against
        0.69, mask AP50 0.019 against 0.0002). No loader workers: on 2 cores they
        compete with the training step for the CPU (60 steps measured 5 % faster
        without them). Channels-last layout: no change on that CPU, faster with oneDNN
        on CPUs with AMX.
        """
        return cls(
            name="cpu",
            image_size=(256, 352),
            batch_size=4,
            num_workers=0,
            backbone_depth=10,
            backbone_width=16,
            channels_last=True,
            fpn_channels=32,
            head_channels=32,
            num_stacked_convs=2,
            mask_head="decoupled",
            num_grids=(16, 12, 8, 6, 4),
            optimizer="adamw",
            base_lr=0.008,
            weight_decay=0.05,
            max_epochs=None,
            time_budget_min=18.5,
            lr_schedule="cosine",
            lr_milestones=(),
            warmup_iters=50,
            map_every_n_epochs=2,
            mask_threshold=0.4,
        )

    @classmethod
    def solov2_paper(cls) -> SOLOConfig:
        """SOLOv2 with the official settings, on the SOLO paper preset's input and schedule.

        The category and kernel branches are 4 x [3x3 conv 512, GN, ReLU], the kernels
        and unified mask features E = 256 channels wide, the mask feature branch 128
        (the official SOLOv2 R50 config; SOLOv2-Light: ``head_channels=256,
        kernel_channels=128``). Grids, scale ranges and losses are SOLO's, as in the
        paper; so are the strides, which differs from it: the unified mask features are
        at stride 8 and each level's masks at SOLO's mask size, where the paper has one
        map at 1/4 for every level (``strides=(4, 8, 16, 32, 32)`` brings the features to
        1/4; on the CPU budget it measured worse, benchmarks/RESULTS.md).
        """
        return cls.paper().replace(
            name="solov2_paper",
            head="solov2",
            head_channels=512,
            num_stacked_convs=4,
            kernel_channels=256,
            mask_branch_channels=128,
        )

    @classmethod
    def solov2_cpu(cls) -> SOLOConfig:
        """SOLOv2 on the cpu preset: the same trunk, FPN, input, grids and schedule.

        Only the head differs, so that the two compare head against head: kernel and
        category branches 32 wide as SOLO's, E = 32 (a cell's kernel has 32 weights)
        and a 32-channel mask feature branch. Masks are cut at the paper's 0.5: the 0.4
        of the cpu preset belongs to Decoupled SOLO's product masks.
        """
        return cls.cpu().replace(
            name="solov2_cpu",
            head="solov2",
            mask_head="vanilla",
            kernel_channels=32,
            mask_branch_channels=32,
            mask_threshold=0.5,
        )

    @classmethod
    def dense(cls) -> SOLOConfig:
        """The cpu preset for the built-in dense set: one class of small touching cells.

        A stand-in for users' own data of that kind (``data.builtin: dense``, 20-60
        cells of 8-25 px per image). `python -m solo_lib analyse` on it with the cpu
        preset's grids (16 12 8 6 4) finds 17.5 % of the cells owning no grid cell and
        30 % losing a centre cell to a neighbour; the paper's grids (40 36 24 16 12)
        leave 0.2 % without a cell and 2.9 % losing one, at the same cheap 256x352 input. Mask AP runs every
        fourth epoch (and on the last): with 40 cells per image, post-processing and
        evaluation cost more than the training steps of an epoch. A 9-minute budget,
        so that a run with data generation fits in 10 (benchmarks/RESULTS.md, "The
        dense built-in set"). Every mask with a pixel is kept (``min_mask_area=0``):
        SOLO's rule drops masks of at most the level's stride (8 pixels of a 64 x 88
        mask), and most objects here are smaller than 12 input pixels, 9 mask pixels. On
        a trained model's 80 validation images the rule's 0.388 AP50 became 0.631 (AP
        0.164 to 0.276; notebook 06, section 6.6, measures it on your run).
        """
        return cls.cpu().replace(
            name="dense",
            num_classes=1,
            class_names=("cell",),
            num_grids=(40, 36, 24, 16, 12),
            map_every_n_epochs=4,
            time_budget_min=9.0,
            min_mask_area=0,
        )

    @classmethod
    def gpu(cls) -> SOLOConfig:
        """The cpu preset's recipe grown for one GPU: batch 16, ResNet-18, 64-channel FPN and heads.

        The cpu preset's data, input, grids, strides, Decoupled SOLO mask branch, losses,
        post-processing and AdamW with cosine decay, mask AP every second epoch. The rate
        is the cpu preset's too: base_lr 0.008 belongs to base_batch_size 16 and scales
        linearly with the batch, so a step of 16 images takes 0.008 (the cpu preset's steps
        of 4 take 0.002). The network: ResNet-18 at full width (64 to 512 channels, from
        scratch), 64-channel FPN and heads with 2 stacked convs; 11.6 M parameters (11.4 M
        trunk and FPN, 0.23 M head), 46.5 MB of float32 weights, 28 times the cpu preset's
        0.41 M. 12 loader workers; no channels-last layout (it helps oneDNN on CPUs);
        ``trainer.precision: null`` in gpu.yaml, which is bf16-mixed on a GPU with bf16
        (`solo_lib.hardware`). A 9.5-minute budget, so that a run with data generation
        fits in 10 minutes.

        Why a recipe of its own: the cpu preset at batch 4 steps no faster on an H200 than
        on a CPU with bf16 instructions (0.16-0.2 s per step). Measured on one H200 alone
        with this recipe (batch 16, ResNet-18 at width 64, 64-channel FPN and heads, 12
        loader workers, bf16-mixed) in a 2.5-minute budget: 13 epochs (650 steps) to
        validation mask AP 0.116, AP50 0.423, AP75 0.037; AP50 every third epoch 0.009,
        0.034, 0.171, 0.360, 0.423, still rising. The preset's own 10-minute budget has
        NOT been measured yet (the session that wrote it had no GPU): how many epochs it
        plans and the AP they reach are still to be seen.
        """
        return cls.cpu().replace(
            name="gpu",
            batch_size=16,
            num_workers=12,
            backbone_depth=18,
            backbone_width=64,
            channels_last=False,
            fpn_channels=64,
            head_channels=64,
            time_budget_min=9.5,
        )

    @classmethod
    def preset(cls, name: str) -> SOLOConfig:
        """The preset called `name`, one of `PRESETS` ("cpu": `SOLOConfig.cpu()`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return getattr(cls, name)()

    def replace(self, **changes: object) -> SOLOConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # --- derived quantities -------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.num_grids)

    @property
    def scale_ranges(self) -> tuple[tuple[float, float], ...]:
        """The paper's scale ranges, scaled from 800 px to this input height."""
        factor = self.image_size[0] / REFERENCE_HEIGHT
        return tuple((lo * factor, hi * factor) for lo, hi in PAPER_SCALE_RANGES)

    def feature_size(self, level: int) -> tuple[int, int]:
        """(H_f, W_f) of the FPN feature at `level` for this input size."""
        stride = self.strides[level]
        return (math.ceil(self.image_size[0] / stride), math.ceil(self.image_size[1] / stride))

    def mask_size(self, level: int) -> tuple[int, int]:
        """(h, w) of the mask predictions and targets at `level`: twice the feature size."""
        h, w = self.feature_size(level)
        return (2 * h, 2 * w)

    def learning_rate(self, total_batch_size: int) -> float:
        """`base_lr` scaled linearly from `base_batch_size` to `total_batch_size`."""
        return self.base_lr * total_batch_size / self.base_batch_size

    def __post_init__(self) -> None:
        if isinstance(self.class_names, str):
            raise ValueError(
                f"class_names must be a list of names, got the string {self.class_names!r}"
            )
        self.class_names = tuple(self.class_names)
        if self.category_ids is not None:
            self.category_ids = tuple(int(i) for i in self.category_ids)
        self.image_size = tuple(self.image_size)
        self.num_grids = tuple(self.num_grids)
        self.strides = tuple(self.strides)
        self.lr_milestones = tuple(self.lr_milestones)
        self.scale_jitter = tuple(self.scale_jitter)
        self.pixel_mean = tuple(self.pixel_mean)
        self.pixel_std = tuple(self.pixel_std)
        self._check_choices()
        self._check_ranges()

    def _check_choices(self) -> None:
        """Errors for settings that must agree with each other or name one of a few choices."""
        n = len(self.num_grids)
        if len(self.strides) != n:
            raise ValueError(f"strides has {len(self.strides)} levels, num_grids has {n}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for num_classes={self.num_classes}"
            )
        if self.category_ids is not None and len(self.category_ids) != self.num_classes:
            raise ValueError(
                f"category_ids has {len(self.category_ids)} ids for num_classes={self.num_classes}"
            )
        h, w = self.image_size
        if h % 32 or w % 32:
            raise ValueError(f"image_size must be divisible by 32, got {self.image_size}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.lr_schedule not in ("step", "cosine"):
            raise ValueError(f"lr_schedule must be 'step' or 'cosine', got {self.lr_schedule!r}")
        if self.mask_head not in ("vanilla", "decoupled"):
            raise ValueError(f"mask_head must be 'vanilla' or 'decoupled', got {self.mask_head!r}")
        if self.head not in ("solo", "solov2"):
            raise ValueError(f"head must be 'solo' or 'solov2', got {self.head!r}")
        if self.head == "solov2":
            self._check_solov2()
        if self.lr_schedule == "step" and self.lr_milestones and self.max_epochs is None:
            raise ValueError(
                "lr_milestones are epochs of max_epochs, and max_epochs is null: set max_epochs "
                "(with a time budget, the milestones keep their fractions of the planned run) "
                "or use lr_schedule 'cosine'"
            )
        if self.nms_kernel not in ("gaussian", "linear"):
            raise ValueError(f"nms_kernel must be 'gaussian' or 'linear', got {self.nms_kernel!r}")

    def _check_solov2(self) -> None:
        """SOLOv2's head has its own mask branch and sums levels 0-3 at the finest stride."""
        if self.mask_head != "vanilla":
            raise ValueError(
                f"mask_head {self.mask_head!r} is a SOLO mask branch; head 'solov2' has its "
                "own (set mask_head to 'vanilla', the default)"
            )
        finest = min(self.strides[:4])
        if any(s % finest or (s // finest) & (s // finest - 1) for s in self.strides[:4]):
            raise ValueError(
                f"head 'solov2' needs the strides of levels 0-3 to be the finest one times a "
                f"power of two (it upsamples them x2 at a time), got {self.strides}"
            )

    def _check_ranges(self) -> None:
        """A clear error, naming the field, for every value outside its range.

        Checked here, when the config is made, rather than where the value is first
        used (a batch size of 0 would otherwise fail in the data loader, a zero
        `map_every_n_epochs` only after the first epoch). Comparisons are written so
        that NaN fails them.
        """
        unit = "in [0, 1]"
        checks: list[tuple[str, bool, str]] = [
            ("num_classes", self.num_classes >= 1, "at least 1"),
            (
                "image_size",
                len(self.image_size) == 2 and min(self.image_size) > 0,
                "(H, W), both positive multiples of 32",
            ),
            (
                "pixel_mean",
                len(self.pixel_mean) == 3 and all(map(math.isfinite, self.pixel_mean)),
                "three finite numbers (R, G, B)",
            ),
            (
                "pixel_std",
                len(self.pixel_std) == 3 and all(s > 0 for s in self.pixel_std),
                "three positive numbers (R, G, B)",
            ),
            ("hflip_prob", 0 <= self.hflip_prob <= 1, unit),
            ("copy_paste_prob", 0 <= self.copy_paste_prob <= 1, unit),
            (
                "scale_jitter",
                len(self.scale_jitter) == 2
                and 0 < self.scale_jitter[0] <= self.scale_jitter[1] <= 1,
                "(low, high) with 0 < low <= high <= 1 (images are shrunk, never enlarged, "
                "to fit the input)",
            ),
            ("val_fraction", 0 < self.val_fraction < 1, "between 0 and 1 (exclusive)"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("num_workers", self.num_workers >= 0, "0 or more"),
            ("backbone_width", self.backbone_width >= 8, "at least 8"),
            ("fpn_channels", self.fpn_channels >= 1, "at least 1"),
            (
                "head_channels",
                self.head_channels >= 32 and self.head_channels % 32 == 0,
                "a positive multiple of 32 (GroupNorm(32))",
            ),
            ("num_stacked_convs", self.num_stacked_convs >= 1, "at least 1"),
            (
                "kernel_channels",
                self.kernel_channels >= 32 and self.kernel_channels % 32 == 0,
                "a positive multiple of 32 (GroupNorm(32))",
            ),
            (
                "mask_branch_channels",
                self.mask_branch_channels >= 32 and self.mask_branch_channels % 32 == 0,
                "a positive multiple of 32 (GroupNorm(32))",
            ),
            ("strides", all(s >= 1 for s in self.strides), "positive"),
            ("num_grids", all(s >= 1 for s in self.num_grids), "positive"),
            ("center_epsilon", 0 < self.center_epsilon < math.inf, "positive (0.2 in the paper)"),
            ("focal_alpha", 0 <= self.focal_alpha <= 1, unit),
            ("focal_gamma", self.focal_gamma >= 0, "0 or more"),
            ("cate_loss_weight", self.cate_loss_weight >= 0, "0 or more"),
            ("mask_loss_weight", self.mask_loss_weight >= 0, "0 or more"),
            ("score_threshold", 0 <= self.score_threshold <= 1, unit),
            ("mask_threshold", 0 <= self.mask_threshold <= 1, unit),
            ("update_threshold", 0 <= self.update_threshold <= 1, unit),
            (
                "min_mask_area",
                self.min_mask_area is None or self.min_mask_area >= 0,
                "0 or more, or null (the level's stride)",
            ),
            ("nms_pre", self.nms_pre >= 1, "at least 1"),
            ("max_per_img", self.max_per_img >= 1, "at least 1"),
            ("nms_sigma", self.nms_sigma > 0, "positive"),
            ("base_lr", 0 < self.base_lr < math.inf, "a positive number"),
            ("base_batch_size", self.base_batch_size >= 1, "at least 1"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", 0 <= self.weight_decay < math.inf, "0 or more"),
            (
                "max_epochs",
                self.max_epochs >= 1
                if self.max_epochs is not None
                else self.time_budget_min is not None,
                "at least 1, or null with a time_budget_min (the budget decides)",
            ),
            (
                "time_budget_min",
                self.time_budget_min is None or 0 < self.time_budget_min < math.inf,
                "positive or None",
            ),
            ("lr_milestones", all(m >= 0 for m in self.lr_milestones), "epochs, 0 or more"),
            ("lr_gamma", self.lr_gamma > 0, "positive"),
            ("warmup_iters", self.warmup_iters >= 0, "0 or more"),
            ("warmup_ratio", 0 < self.warmup_ratio <= 1, "in (0, 1]"),
            ("grad_clip_norm", self.grad_clip_norm > 0, "positive"),
            ("map_every_n_epochs", self.map_every_n_epochs >= 1, "at least 1"),
        ]
        for field, ok, expected in checks:
            if not ok:
                raise ValueError(f"{field} must be {expected}, got {getattr(self, field)!r}")
