"""The one image decoder: colour rules, refusals, and the gray conversion separate uses."""

import io

import numpy as np
import pytest
from PIL import Image

from aur_tf import images

GRAY = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20


def _file(array, mode=None, image_format="PNG", **save):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, image_format, **save)
    buffer.seek(0)
    return buffer


def _palette_file(transparency):
    image = Image.fromarray(GRAY).convert("P")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **({"transparency": 0} if transparency else {}))
    buffer.seek(0)
    return buffer, np.asarray(image.convert("RGB"), np.float32) / 255


def test_gray_8_and_16_bit():
    decoded = images.decode(_file(GRAY))
    np.testing.assert_array_equal(decoded.pixels, GRAY[..., None] / np.float32(255))
    assert decoded.pixels.dtype == np.float32 and not decoded.had_alpha
    deep = GRAY.astype(np.uint16) * 250
    decoded = images.decode(_file(deep))
    np.testing.assert_allclose(decoded.pixels[..., 0], deep / 65535, rtol=1e-6)
    assert decoded.sixteen_bit and decoded.pixels.shape == (3, 4, 1)


def test_alpha_is_dropped_and_reported():
    rgba = np.dstack([GRAY, GRAY // 2, GRAY // 3, np.zeros_like(GRAY)])
    decoded = images.decode(_file(rgba, "RGBA"))
    np.testing.assert_array_equal(decoded.pixels, rgba[..., :3] / np.float32(255))
    assert decoded.had_alpha
    decoded = images.decode(_file(np.dstack([GRAY, GRAY]), "LA"))
    assert decoded.pixels.shape == (3, 4, 1) and decoded.had_alpha


@pytest.mark.parametrize("transparency", [False, True])
def test_palettes_become_rgb(transparency):
    file, expected = _palette_file(transparency)
    decoded = images.decode(file)
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.had_alpha == transparency


def test_jpeg_rgb_decodes():
    decoded = images.decode(_file(np.dstack([GRAY] * 3), image_format="JPEG", quality=100))
    assert decoded.pixels.shape == (3, 4, 3) and not decoded.had_alpha


def test_a_wrong_size_is_refused_before_decoding():
    with pytest.raises(images.WrongSize) as raised:
        images.decode(_file(GRAY), size=3)
    assert (raised.value.width, raised.value.height) == (4, 3)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
        _file(GRAY).getvalue()[:45],
        _file(GRAY, image_format="GIF").getvalue(),
    ],
)
def test_what_is_not_a_good_png_or_jpeg_is_an_image_error(content):
    with pytest.raises(images.ImageError):
        images.decode(io.BytesIO(content))


def test_luma_weighs_rgb_as_pillow_does():
    rgb = np.dstack([GRAY, GRAY // 2, GRAY // 3])
    expected = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)[..., None] / 255
    np.testing.assert_allclose(images.luma(rgb / np.float32(255)), expected, atol=0.5 / 255)
