"""Decoding PNG and JPEG files into float pixels, with one set of colour rules for every reader.

`decode` is used by image-folder sources (`aur_tf.data.sources`) and by `export.separate`.
Colour rules, by the mode Pillow opens the file in:
  16-bit gray (I;16, I;16B, I;16L, I;16N, I)   /65535, C = 1
  1-bit and 8-bit gray (1, L), gray + alpha (LA) /255, C = 1, alpha dropped
  palette (P, PA)                                expanded to RGB (through RGBA, so that a palette
                                                 with transparency converts without a warning),
                                                 /255, C = 3, alpha dropped
  anything else (RGB, RGBA, CMYK, YCbCr)         converted to RGB, /255, C = 3, alpha dropped
Alpha only says which pixels to show, not their colour: transparent pixels keep their stored
colour. Whether the file had alpha is reported, so a caller can say it was dropped or, as
`export.separate` does for 1-channel models, turn such colour images to gray (`luma`).
"""

import dataclasses

import numpy as np
from PIL import Image

# Only these decoders may run, whatever a file's extension claims.
FORMATS = ("PNG", "JPEG")
_SIXTEEN_BIT_MAX = 65535
# ITU-R 601-2 luma weights of R, G and B, as Pillow's RGB -> L conversion uses them.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class ImageError(Exception):
    """A file is not a decodable PNG or JPEG image; the message says why in one line."""


class WrongSize(ImageError):
    """An image is not the size asked for; `width` and `height` are its own."""

    def __init__(self, width, height):
        super().__init__(f"image is {width}x{height}")
        self.width, self.height = width, height


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A decoded image.

    pixels: `[H, W, C]` float32 in [0, 1]; C = 1 for gray images, 3 for colour ones.
    had_alpha: the file had an alpha channel (or a palette with transparency), now dropped.
    sixteen_bit: the file held 16-bit values, scaled by 1/65535.
    """

    pixels: np.ndarray
    had_alpha: bool
    sixteen_bit: bool


def decode(file, size=None):
    """Decodes a PNG or JPEG image (see the module docstring for the colour rules).

    Args:
      file: a binary file object, positioned at the start of the image.
      size: if given, an image that is not `size` x `size` is refused from its header, before
        its pixels are decoded (so a huge one costs no memory).

    Returns:
      A `Decoded`.

    Raises:
      WrongSize: the image is not `size` x `size`.
      ImageError: not a PNG or JPEG, corrupt, truncated, too large for Pillow, or 16-bit values
        outside 0..65535.
    """
    try:
        with Image.open(file, formats=FORMATS) as image:
            if size is not None and image.size != (size, size):
                raise WrongSize(*image.size)
            image.load()
            return _pixels(image)
    except Image.UnidentifiedImageError:
        raise ImageError("not a PNG or JPEG image") from None
    # Pillow reports unreadable files as OSError, SyntaxError or ValueError depending on the
    # decoder, and oversized ones as DecompressionBombError.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(str(error) or type(error).__name__) from None


def _pixels(image):
    """The `Decoded` of a loaded Pillow image."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > _SIXTEEN_BIT_MAX:
            raise ImageError(
                f"{image.mode} image with values outside 0..{_SIXTEEN_BIT_MAX}: "
                "store 8- or 16-bit images"
            )
        return Decoded(
            (values / float(_SIXTEEN_BIT_MAX)).astype(np.float32)[..., np.newaxis],
            had_alpha=False,
            sixteen_bit=True,
        )
    had_alpha = image.mode in ("LA", "PA", "RGBA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if image.mode in ("1", "L", "LA"):
        gray = np.asarray(image.convert("L"), dtype=np.float32)[..., np.newaxis] / 255
        return Decoded(gray, had_alpha, sixteen_bit=False)
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    return Decoded(
        np.asarray(image.convert("RGB"), dtype=np.float32) / 255, had_alpha, sixteen_bit=False
    )


def luma(pixels):
    """`[H, W, 3]` RGB float pixels in [0, 1] -> `[H, W, 1]` gray (ITU-R 601-2 luma)."""
    return np.clip(pixels @ _LUMA, 0.0, 1.0)[..., np.newaxis]
