"""Reading an image file as the 8-bit RGB array that every data set works on.

PIL's ``convert("RGB")`` alone gets three kinds of file wrong, silently:
- 16-bit greyscale (PNG, TIFF) is clipped at 255, so most pixels turn white;
- 32-bit float TIFFs in [0, 1] are truncated to integers, so they turn black;
- the EXIF orientation of camera photos is ignored, so the picture lies on its side
  while the annotations (made on the displayed picture) do not.
`read_rgb` rescales the first two to 0..255 (with a warning that says how) and applies
the EXIF orientation, as image viewers and annotation tools do. `upright_size` gives the
size that `read_rgb` will return from the file's header alone, so that data sets check
every image's size when they are built, without decoding a pixel.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from solo_lib.data.errors import DataFormatError

#: PIL modes with more than 8 bits per pixel, all single-channel.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")

#: EXIF orientations that `ImageOps.exif_transpose` turns by 90 degrees (5: transpose,
#: 6: rotate 270, 7: transverse, 8: rotate 90): width and height swap.
QUARTER_TURNS = frozenset({5, 6, 7, 8})


def read_rgb(path: str | Path) -> np.ndarray:
    """The image in `path` as uint8 (H, W, 3) RGB, upright, with its full tonal range.

    Raises `DataFormatError`, naming the file, when it cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in WIDE_MODES:
                grey = _rescale_to_uint8(np.asarray(img), path, img.mode)
                return np.repeat(grey[:, :, None], 3, axis=2)
            return np.asarray(img.convert("RGB")).copy()
    except (OSError, ValueError, SyntaxError) as err:  # PIL's decoders raise all three
        raise _unreadable(path, err) from None


def upright_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the image in `path` as `read_rgb` returns it, from the header alone.

    The stored size, swapped where the EXIF orientation is a quarter turn. Only EXIF
    data before the pixels is read (where cameras and tools write it): PNG's own
    ``getexif`` would decode the whole picture to look for an eXIf chunk after them.
    Raises `DataFormatError`, naming the file, when it is not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = Image.Image.getexif(img).get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError) as err:
        raise _unreadable(path, err) from None
    return (width, height) if orientation in QUARTER_TURNS else (height, width)


def _unreadable(path: Path, err: Exception) -> DataFormatError:
    """The error for a file that PIL cannot open or decode."""
    return DataFormatError(
        f"{path}: cannot be read as an image ({err}); expected an image file "
        "(PNG, JPEG, BMP, TIFF or WebP)"
    )


def _rescale_to_uint8(values: np.ndarray, path: Path, mode: str) -> np.ndarray:
    """Single-channel 16-bit, 32-bit or float `values` (H, W) mapped onto 0..255.

    Integers are divided by their full scale (65535 for 16-bit data, so that the same
    sensor value always gives the same grey); floats in [0, 1] are multiplied by 255;
    anything else (floats outside [0, 1], 32-bit integers above 65535) is stretched
    from its minimum to its maximum.
    """
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataFormatError(f"{path}: image has NaN or infinite pixels; expected finite values")
    low, high = float(values.min()), float(values.max())
    if mode == "F" and low >= 0.0 and high <= 1.0:
        scaled, how = values * 255.0, "multiplied by 255 (floats in [0, 1])"
    elif mode != "F" and low >= 0.0 and high <= 65535.0:
        scaled, how = values * (255.0 / 65535.0), "divided by 257 (16-bit full scale)"
    else:
        span = high - low if high > low else 1.0
        scaled, how = (values - low) * (255.0 / span), f"stretched from [{low:g}, {high:g}]"
    warnings.warn(f"{path}: {mode} image rescaled to 8 bits: {how}", stacklevel=3)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
