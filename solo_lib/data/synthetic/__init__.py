"""The built-in data set: procedural vehicles, people and animals in the CIS 680 format.

- `shapes`: the objects' silhouettes and their rasterisation;
- `render`: one image, its objects placed, textured and occluding each other;
- `cache`: the data set on disk, generated on first use.
"""

from solo_lib.data.synthetic.cache import (
    GENERATOR,
    GENERATOR_VERSION,
    METADATA_FILE,
    ensure_builtin_dataset,
    read_metadata,
    write_dataset,
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
    "GENERATOR",
    "GENERATOR_VERSION",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "MAX_OBJECTS",
    "MAX_SIZE",
    "METADATA_FILE",
    "MIN_SIZE",
    "MIN_VISIBLE_AREA",
    "ensure_builtin_dataset",
    "read_metadata",
    "render_image",
    "write_dataset",
]
