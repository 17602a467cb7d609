"""The built-in data set on disk: the four CIS 680 files, written once and reused.

`write_dataset` draws N images (`render_image`) into the CIS 680 format atomically;
`ensure_builtin_dataset` returns the folder, generating it on first use or when its
`metadata.json` names another size, seed or generator version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from solo_lib.atomic import atomic_directory, file_lock
from solo_lib.data.cis680 import BBOXES_FILE, IMAGES_FILE, LABELS_FILE, MASKS_FILE
from solo_lib.data.synthetic.render import IMAGE_HEIGHT, IMAGE_WIDTH, render_image
from solo_lib.data.synthetic.shapes import CLASS_NAMES
from solo_lib.paths import BUILTIN_DATA_DIR

#: Bumped whenever the drawing changes, so that `ensure_builtin_dataset` regenerates.
GENERATOR_VERSION = 1
METADATA_FILE = "metadata.json"
GENERATOR = "solo_lib.data.synthetic"
_COMPRESSION = {"compression": "gzip", "compression_opts": 4}


# --------------------------------------------------------------------------------------
# Writing the four files
# --------------------------------------------------------------------------------------
def write_dataset(out_dir: str | os.PathLike, num_images: int, seed: int) -> Path:
    """Write `num_images` synthetic images with `seed` to `out_dir` in the CIS 680 format.

    Files: the two gzip (zlib) compressed h5 files (one chunk per image / mask), the two
    pickled object-array .npy files, and `metadata.json` (generator version, seed, counts).
    The folder is built next to `out_dir` and swapped in at the end, so an interrupted
    run never leaves a half-written data set. Returns `out_dir`.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
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
            for i in range(num_images):
                image, m, labels[i], bboxes[i] = render_image(seed, i)
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
            "num_images": num_images,
            "num_masks": total,
            "seed": seed,
            "class_names": list(CLASS_NAMES),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return out_dir


def read_metadata(root: str | os.PathLike) -> dict | None:
    """The generator's `metadata.json` in `root`, or None when missing or unreadable."""
    try:
        return json.loads((Path(root) / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None


def _is_current(root: Path, num_images: int, seed: int) -> bool:
    meta = read_metadata(root)
    files_there = all(
        (root / f).is_file() for f in (IMAGES_FILE, MASKS_FILE, LABELS_FILE, BBOXES_FILE)
    )
    return (
        files_there
        and meta is not None
        and (
            meta.get("version") == GENERATOR_VERSION
            and meta.get("num_images") == num_images
            and meta.get("seed") == seed
        )
    )


def ensure_builtin_dataset(
    root: str | os.PathLike = BUILTIN_DATA_DIR, num_images: int = 1000, seed: int = 0
) -> Path:
    """The built-in data set's folder, generated on first use (about 30 s for 1,000 images).

    A folder whose `metadata.json` names another size, seed or generator version is
    regenerated; a folder of other files (e.g. the real CIS 680 data) is never replaced:
    that raises FileExistsError. Safe when several processes call it at once: they take a file lock,
    and the folder is swapped in whole.
    """
    root = Path(root)
    if _is_current(root, num_images, seed):
        return root
    meta = read_metadata(root)
    if (
        root.is_dir()
        and any(root.iterdir())
        and (meta is None or meta.get("generator") != GENERATOR)
    ):
        raise FileExistsError(
            f"{root} holds files that the built-in generator did not write (no {METADATA_FILE} from "
            f"{GENERATOR}); refusing to replace them. Pass another root, or move the folder away."
        )
    with file_lock(root.parent / f".{root.name}.lock"):
        if not _is_current(root, num_images, seed):
            write_dataset(root, num_images, seed)
    return root
