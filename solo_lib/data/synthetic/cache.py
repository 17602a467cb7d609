"""The built-in data sets on disk: the four CIS 680 files, written once and reused.

The generator has two modes (`MODES`): "objects", the course's data (`render_image`:
1 to 6 vehicles, people and animals, in data/builtin) and "dense", a stand-in for
users' own data (`render_dense_image`: 20 to 60 small touching cells of one class, in
data/dense). `write_dataset` draws N images of a mode into the CIS 680 format
atomically; `ensure_builtin_dataset` returns a mode's folder, generating it on first
use or when its `metadata.json` names another size, seed or generator version.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from solo_lib.atomic import atomic_directory, file_lock
from solo_lib.data.cis680 import BBOXES_FILE, IMAGES_FILE, LABELS_FILE, MASKS_FILE
from solo_lib.data.synthetic.dense import DENSE_CLASS_NAMES, render_dense_image
from solo_lib.data.synthetic.render import IMAGE_HEIGHT, IMAGE_WIDTH, render_image
from solo_lib.data.synthetic.shapes import CLASS_NAMES
from solo_lib.paths import BUILTIN_DATA_DIR, DATA_DIR

#: Bumped whenever the drawing of either mode changes, so that `ensure_builtin_dataset`
#: regenerates.
GENERATOR_VERSION = 1
METADATA_FILE = "metadata.json"
GENERATOR = "solo_lib.data.synthetic"
_COMPRESSION = {"compression": "gzip", "compression_opts": 4}

#: The dense mode's data set, generated on first use.
DENSE_DATA_DIR = DATA_DIR / "dense"

#: Draws image `index` with `seed`: (image, masks, labels, boxes) as `render_image`.
Renderer = Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------------------
# The modes
# --------------------------------------------------------------------------------------
OBJECTS, DENSE = "objects", "dense"


@dataclass(frozen=True)
class Mode:
    """What a mode of the generator fixes besides its drawing: classes, folder, default size."""

    class_names: tuple[str, ...]
    root: Path
    num_images: int


#: 1,000 objects-mode images give about 3,500 objects; 400 dense images give about
#: 16,000 cells, as many as users' own small data sets hold, generated in about 30 s.
MODES: dict[str, Mode] = {
    OBJECTS: Mode(CLASS_NAMES, BUILTIN_DATA_DIR, 1000),
    DENSE: Mode(DENSE_CLASS_NAMES, DENSE_DATA_DIR, 400),
}


def get_mode(mode: str) -> Mode:
    """The `Mode` named `mode`; a ValueError naming the known modes for any other name."""
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(
            f"unknown generator mode {mode!r}; expected one of {sorted(MODES)}"
        ) from None


def _renderer(mode: str) -> Renderer:
    """The function that draws one image of `mode` (looked up at call time, so tests can patch it)."""
    return render_dense_image if mode == DENSE else render_image


# --------------------------------------------------------------------------------------
# Writing the four files
# --------------------------------------------------------------------------------------
def write_dataset(
    out_dir: str | os.PathLike,
    num_images: int,
    seed: int,
    mode: str = OBJECTS,
    progress: bool = False,
) -> Path:
    """Write `num_images` synthetic images of `mode` with `seed` to `out_dir` in the CIS 680 format.

    `progress` shows a progress bar (tqdm, on stderr) while the images are drawn.

    Files: the two gzip (zlib) compressed h5 files (one chunk per image / mask), the two
    pickled object-array .npy files, and `metadata.json` (generator version, mode, seed,
    counts, class names).
    The folder is built next to `out_dir` and swapped in at the end, so an interrupted
    run never leaves a half-written data set. Returns `out_dir`.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    class_names = get_mode(mode).class_names
    render = _renderer(mode)
    out_dir = Path(out_dir)
    shape = (IMAGE_HEIGHT, IMAGE_WIDTH)
    labels = np.empty(num_images, dtype=object)
    bboxes = np.empty(num_images, dtype=object)
    with atomic_directory(out_dir) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        with h5py.File(tmp / IMAGES_FILE, "w") as fi, h5py.File(tmp / MASKS_FILE, "w") as fm:
            images = fi.create_dataset(
                "data",
                shape=(num_images, 3, *shape),
                dtype="uint8",
                chunks=(1, 3, *shape),
                **_COMPRESSION,
            )
            masks = fm.create_dataset(
                "data",
                shape=(0, *shape),
                maxshape=(None, *shape),
                dtype="uint8",
                chunks=(1, *shape),
                **_COMPRESSION,
            )
            total = 0
            drawn = tqdm(range(num_images), desc=f"{mode} images", disable=not progress)
            for i in drawn:
                image, m, labels[i], bboxes[i] = render(seed, i)
                images[i] = image
                if len(m):
                    masks.resize(total + len(m), axis=0)
                    masks[total:] = m
                    total += len(m)
        np.save(tmp / LABELS_FILE, labels, allow_pickle=True)
        np.save(tmp / BBOXES_FILE, bboxes, allow_pickle=True)
        metadata = {
            "generator": GENERATOR,
            "version": GENERATOR_VERSION,
            "mode": mode,
            "num_images": num_images,
            "num_masks": total,
            "seed": seed,
            "class_names": list(class_names),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return out_dir


def read_metadata(root: str | os.PathLike) -> dict | None:
    """The generator's `metadata.json` in `root`, or None when missing or unreadable."""
    try:
        return json.loads((Path(root) / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None


def _mode_of(meta: dict) -> str:
    """The mode a generator's metadata records; sets written before modes existed are "objects"."""
    return meta.get("mode", OBJECTS)


def _is_current(root: Path, num_images: int, seed: int, mode: str) -> bool:
    meta = read_metadata(root)
    files_there = all(
        (root / f).is_file() for f in (IMAGES_FILE, MASKS_FILE, LABELS_FILE, BBOXES_FILE)
    )
    return (
        files_there
        and meta is not None
        and (
            meta.get("version") == GENERATOR_VERSION
            and _mode_of(meta) == mode
            and meta.get("num_images") == num_images
            and meta.get("seed") == seed
        )
    )


def _check_replaceable(root: Path, mode: str) -> None:
    """Raise FileExistsError unless `root` is missing, empty or a set of `mode` by this generator.

    Other files (e.g. the real CIS 680 data) and the other mode's set are never replaced:
    regenerating only happens for another size, seed or generator version.
    """
    if not root.is_dir() or not any(root.iterdir()):
        return
    meta = read_metadata(root)
    if meta is None or meta.get("generator") != GENERATOR:
        raise FileExistsError(
            f"{root} holds files that the built-in generator did not write (no {METADATA_FILE} from "
            f"{GENERATOR}); refusing to replace them. Pass another root, or move the folder away."
        )
    if _mode_of(meta) != mode:
        raise FileExistsError(
            f"{root} holds the generator's {_mode_of(meta)!r} data set, not a {mode!r} one; refusing "
            f"to replace it. Pass another root (the {mode!r} default is {get_mode(mode).root})."
        )


def ensure_builtin_dataset(
    root: str | os.PathLike | None = None,
    num_images: int | None = None,
    seed: int = 0,
    mode: str = OBJECTS,
) -> Path:
    """A built-in data set's folder, generated on first use.

    `mode` is "objects" (the course's data; by default 1,000 images in data/builtin,
    about 30 s to generate) or "dense" (small touching cells of one class; by default
    400 images in data/dense, about 30 s); `root` and `num_images` default to the mode's.
    A folder whose `metadata.json` names another size, seed or generator version is
    regenerated; a folder of other files (e.g. the real CIS 680 data) or of the other
    mode is never replaced: that raises FileExistsError. Safe when several processes
    call it at once: they take a file lock, and the folder is swapped in whole.
    """
    spec = get_mode(mode)
    root = Path(spec.root if root is None else root)
    num_images = spec.num_images if num_images is None else num_images
    if _is_current(root, num_images, seed, mode):
        return root
    _check_replaceable(root, mode)
    with file_lock(root.parent / f".{root.name}.lock"):
        if not _is_current(root, num_images, seed, mode):
            print(  # on stderr, beside the bar: a status, not a result
                f"generating the built-in {mode!r} data set, {num_images} images, into {root} "
                "(once: later runs find it there)",
                file=sys.stderr,
                flush=True,
            )
            write_dataset(root, num_images, seed, mode, progress=True)
    return root
