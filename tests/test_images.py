"""`read_rgb`: 16-bit and float images keep their tonal range; EXIF orientation is applied."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from solo_lib.data import DataFormatError
from solo_lib.data.images import read_rgb, upright_size


def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path) -> None:
    ramp = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 0, 1, 128, 255 x 257
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    with pytest.warns(UserWarning, match="ramp16.png.*divided by 257"):
        rgb = read_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]  # convert("RGB") gives 0, 255, 255, 255
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_float_tiff_in_unit_range_is_multiplied_by_255(tmp_path) -> None:
    values = np.array([[0.0, 0.5], [0.25, 1.0]], dtype=np.float32)
    path = tmp_path / "unit.tif"
    Image.fromarray(values, mode="F").save(path)
    with pytest.warns(UserWarning, match="multiplied by 255"):
        rgb = read_rgb(path)
    assert rgb[..., 1].tolist() == [[0, 128], [64, 255]]  # convert("RGB") gives all zeros


def test_float_tiff_outside_unit_range_is_stretched(tmp_path) -> None:
    values = np.array([[-10.0, 0.0, 10.0]], dtype=np.float32)
    path = tmp_path / "wide.tif"
    Image.fromarray(values, mode="F").save(path)
    with pytest.warns(UserWarning, match=r"stretched from \[-10, 10\]"):
        assert read_rgb(path)[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path) -> None:
    """Orientation 6: the camera was turned, the picture must be rotated 90 degrees clockwise."""
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0)  # stored top-left: red
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "turned.png"
    image.save(path, exif=exif)
    rgb = read_rgb(path)
    assert rgb.shape == (3, 2, 3)  # displayed upright: 3 rows of 2
    assert tuple(rgb[0, -1]) == (255, 0, 0)  # clockwise turn: top-left goes to top-right


def test_unreadable_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(DataFormatError, match="broken.jpg: cannot be read as an image"):
        read_rgb(path)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_upright_size_is_the_size_read_rgb_returns(tmp_path, orientation, suffix) -> None:
    """Read from the header only, after the EXIF orientation, as `read_rgb` turns the picture."""
    image = Image.fromarray(np.zeros((2, 3, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo{suffix}"
    image.save(path, exif=exif)
    assert upright_size(path) == read_rgb(path).shape[:2]
    assert upright_size(path) == ((3, 2) if orientation in (6, 8) else (2, 3))


def test_upright_size_of_a_non_image_names_the_file(tmp_path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(b"not an image")
    with pytest.raises(DataFormatError, match="notes.png: cannot be read as an image"):
        upright_size(path)
