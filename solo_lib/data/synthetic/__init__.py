"""The built-in data sets: procedural images in the CIS 680 format, in two modes.

- "objects" (the course's data): vehicles, people and animals, 1 to 6 per image;
- "dense" (a stand-in for users' own data): 20 to 60 small, often touching cells
  of one class per image.

Modules:

- `shapes`: the objects' silhouettes, the cells' blobs, and their rasterisation;
- `render`: one objects-mode image, its objects placed, textured and occluding each
  other; the background and the last steps that both modes share;
- `dense`: one dense-mode image;
- `cache`: the data sets on disk, generated on first use.
"""

from solo_lib.data.synthetic.cache import (
    DENSE,
    DENSE_DATA_DIR,
    GENERATOR,
    GENERATOR_VERSION,
    METADATA_FILE,
    MODES,
    OBJECTS,
    Mode,
    ensure_builtin_dataset,
    get_mode,
    read_metadata,
    write_dataset,
)
from solo_lib.data.synthetic.dense import (
    DENSE_CLASS_NAMES,
    MAX_CELLS,
    MAX_DIAMETER,
    MIN_CELLS,
    MIN_DIAMETER,
    render_dense_image,
)
from solo_lib.data.synthetic.render import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    MAX_OBJECTS,
    MAX_SIZE,
    MIN_SIZE,
    MIN_VISIBLE_AREA,
    render_image,
)
from solo_lib.data.synthetic.shapes import CLASS_NAMES

__all__ = [
    "CLASS_NAMES",
    "DENSE",
    "DENSE_CLASS_NAMES",
    "DENSE_DATA_DIR",
    "GENERATOR",
    "GENERATOR_VERSION",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "MAX_CELLS",
    "MAX_DIAMETER",
    "MAX_OBJECTS",
    "MAX_SIZE",
    "METADATA_FILE",
    "MIN_CELLS",
    "MIN_DIAMETER",
    "MIN_SIZE",
    "MIN_VISIBLE_AREA",
    "MODES",
    "Mode",
    "OBJECTS",
    "ensure_builtin_dataset",
    "get_mode",
    "read_metadata",
    "render_dense_image",
    "render_image",
    "write_dataset",
]
