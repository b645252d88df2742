"""Separate mixtures with an exported separator.

    python -m export.separate --model=W/export/separator.onnx --out=DIR [--provider=auto]
        [--batch_size=256] [--grid] INPUT...
    (installed: aur-tf-separate ...)

--model is a `separator.onnx` (onnxruntime) or a `saved_model` directory (TensorFlow) written by
`python -m export.onnx`. Each INPUT is
  * an image file (.png, .jpg, .jpeg): one mixture, giving DIR/<stem>_a.png and DIR/<stem>_b.png;
  * a folder: every such image directly inside it (sorted; subfolders are not entered);
  * a .npy array of mixtures [N, H, W, C] ([N, H, W] for 1-channel models), uint8 0..255,
    uint16 0..65535 or float in [0, 1], giving <stem>_<index>_a.png and <stem>_<index>_b.png;
  * a .npz archive: its array `mixtures` if it has one (other arrays, e.g. the clean sources,
    are then ignored), else every array in it, giving <stem>_<key>_<index>_a.png.
With --grid, <stem>_grid.png shows mixture | source a | source b side by side.

Images are never resized: they must already have the model's height and width. Conversions made
(and reported once per INPUT): 16-bit images are scaled to [0, 1] by 1/65535; RGBA images lose
their alpha channel for 3-channel models and become grayscale (L) for 1-channel models; gray +
alpha becomes gray; palette and 1-bit images are expanded to RGB or gray first. A channel count
that still differs from the model's is an error, as is any other size.

Outputs are the source estimates clipped to [0, 1] and stored as 8-bit PNG, each written under a
temporary name and renamed, so no half-written file carries a final name. A bad INPUT (missing,
corrupt, wrong size or channels, NaN values, ...) is reported as one line
`error: <input>: <reason>` on stderr and the others are still processed; the exit status is then
1. Bad flags, an unusable --model or --out end at once with one line and exit status 2.
"""
import dataclasses
import os
import sys
import time
import zipfile
import zlib

import numpy as np
from absl import app, flags
from PIL import Image

from aur_tf import cli
from aur_tf.errors import UserError
from aur_tf.separator import ONNX_PROVIDERS, PROVIDER_CHOICES, Separator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_KEY = "mixtures"
FAILED_INPUTS_EXIT_CODE = 1
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_SIXTEEN_BIT_MAX = 65535
_PROGRESS_SECONDS = 5.0


class InputError(Exception):
    """One INPUT cannot be separated; the message says why, in one line."""


@dataclasses.dataclass
class Summary:
    """What `separate_inputs` did: mixtures separated and `{input: reason}` of failed inputs."""

    separated: int = 0
    failures: dict = dataclasses.field(default_factory=dict)


def _unit_float(array):
    """`(array, note)`: 16-bit integers become float32 in [0, 1], the rest is left to
    `Separator.prepare` to check."""
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / np.float32(_SIXTEEN_BIT_MAX),
                "16-bit values scaled to [0, 1]")
    return array, None


def read_image(path, channels):
    """Decodes one image file into `([H, W, channels] uint8 or float32 in [0, 1], note or None)`."""
    try:
        with Image.open(path) as image:
            image.load()
    # PIL reports unreadable files as OSError (UnidentifiedImageError), SyntaxError or ValueError
    # depending on the decoder, and oversized ones as DecompressionBombError.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read the image ({e}): it is corrupt or not an image") from None
    mode, note = image.mode, None
    if mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image)
        if array.min() < 0 or array.max() > _SIXTEEN_BIT_MAX:
            raise InputError(f"{mode} image with values outside 0..{_SIXTEEN_BIT_MAX}: store 8- or "
                             "16-bit images")
        array, note = _unit_float(array.astype(np.uint16))
        array = array[..., np.newaxis]
    else:
        if mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif mode == "1":
            image = image.convert("L")
        elif mode in ("CMYK", "YCbCr"):
            image = image.convert("RGB")
        if image.mode in ("RGBA", "LA"):
            gray = channels == 1 or image.mode == "LA"
            note = f"{image.mode} images: alpha dropped" + (
                ", converted to grayscale" if gray and image.mode == "RGBA" else "")
            image = image.convert("L" if gray else "RGB")
        if image.mode not in ("L", "RGB"):
            raise InputError(f"image mode {mode} is not supported: save it as 8- or 16-bit "
                             "grayscale or RGB")
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[..., np.newaxis]
    if array.shape[-1] != channels:
        raise InputError(f"image has {array.shape[-1]} channel(s) but the model takes {channels}: "
                         f"convert it to {'grayscale' if channels == 1 else 'RGB'}")
    return array, note


def read_array_rows(path, channels):
    """`[(stem suffix, rows [N, H, W, C] or [N, H, W]), ...]` and a note, from a .npy or .npz."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = [ARRAY_KEY] if ARRAY_KEY in loaded.files else sorted(loaded.files)
                arrays = [(f"_{key}" if key != ARRAY_KEY else "", loaded[key]) for key in keys]
        else:
            arrays = [("", loaded)]
    # np.load reports unreadable input through all of these, depending on where it breaks.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(f"cannot read the array file ({e}): it is corrupt") from None
    if not arrays:
        raise InputError("the .npz archive holds no arrays")
    rows, notes = [], []
    for suffix, array in arrays:
        if array.ndim == 3 and channels == 1:
            array = array[..., np.newaxis]
        if array.ndim != 4:
            where = f" (array {suffix[1:]})" if suffix else ""
            raise InputError(f"array{where} of shape {list(array.shape)} is not a stack of "
                             "mixtures [N, H, W, C]" + (" or [N, H, W]" if channels == 1 else ""))
        array, note = _unit_float(array)
        rows.append((suffix, array))
        notes.append(note)
    return rows, next((n for n in notes if n), None)


def _expand(inputs):
    """`(input, file or None, error or None)` for each INPUT, folders replaced by their images."""
    for item in inputs:
        if os.path.isdir(item):
            files = sorted(os.path.join(item, name) for name in os.listdir(item)
                           if name.lower().endswith(IMAGE_SUFFIXES))
            if not files:
                yield item, None, f"folder has no {'/'.join(IMAGE_SUFFIXES)} images"
            for path in files:
                yield path, path, None
        elif not os.path.exists(item):
            yield item, None, "does not exist"
        else:
            yield item, item, None


def _load(path, separator):
    """`(stems, mixtures [n, H, W, C] float32 in [0, 1], note)` of one input file."""
    stem, suffix = os.path.splitext(os.path.basename(path))
    try:
        if suffix.lower() in IMAGE_SUFFIXES:
            array, note = read_image(path, separator.channels)
            height, width = array.shape[:2]
            if (height, width) != (separator.image_size, separator.image_size):
                raise InputError(f"image is {width}x{height} but the model takes "
                                 f"{separator.image_size}x{separator.image_size}: resize or pad it")
            return [stem], separator.prepare(array), note
        if suffix.lower() in (".npy", ".npz"):
            arrays, note = read_array_rows(path, separator.channels)
            stems, mixtures = [], []
            for key_suffix, rows in arrays:
                prepared = separator.prepare(rows)
                digits = len(str(max(len(prepared) - 1, 0)))
                stems += [f"{stem}{key_suffix}_{i:0{digits}d}" for i in range(len(prepared))]
                mixtures.append(prepared)
            if not stems:
                raise InputError("holds no mixtures (0 rows)")
            return stems, np.concatenate(mixtures), note
    except ValueError as e:  # from Separator.prepare: shape, dtype, range or NaN
        raise InputError(str(e)) from None
    raise InputError(f"is not an image ({', '.join(IMAGE_SUFFIXES)}), folder, .npy or .npz")


def write_png(array, path):
    """Writes `[H, W, C]` values clipped to [0, 1] as an 8-bit PNG, atomically (temp + rename)."""
    pixels = np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(temporary, "PNG")
    os.replace(temporary, path)


def separate_inputs(separator, inputs, out_dir, batch_size=256, grid=False, say=print,
                    complain=None):
    """Separates every INPUT (see the module docstring) into PNGs in `out_dir`.

    Mixtures from many inputs share model calls of up to `batch_size` images. A failing input is
    reported through `complain` and skipped; the others go on.

    Args:
      separator: a loaded `Separator`.
      inputs: paths of image files, folders, .npy or .npz files.
      out_dir: existing, writable output directory.
      batch_size: mixtures per model call.
      grid: also write `<stem>_grid.png` (mixture | source a | source b).
      say: called with progress and note lines.
      complain: called with each failure line; default prints `error: ...` to stderr.

    Returns:
      A `Summary`.
    """
    complain = complain or (lambda line: print(line, file=sys.stderr))
    summary, pending, owners, announced = Summary(), [], {}, set()
    read = 0  # mixtures read so far, for progress lines
    expanded = list(_expand(inputs))
    last_progress = time.monotonic()

    def failed(item, reason):
        summary.failures[item] = reason
        complain(f"error: {item}: {reason}")

    def flush(count):
        nonlocal pending
        batch, pending = pending[:count], pending[count:]
        sources_a, sources_b = separator.separate(np.stack([m for _, m, _ in batch]),
                                                  batch_size=batch_size)
        for (stem, mixture, item), a, b in zip(batch, sources_a, sources_b):
            if item in summary.failures:  # an earlier write of the same input failed
                continue
            try:
                write_png(a, os.path.join(out_dir, f"{stem}_a.png"))
                write_png(b, os.path.join(out_dir, f"{stem}_b.png"))
                if grid:
                    write_png(np.concatenate([mixture, a, b], axis=1),
                              os.path.join(out_dir, f"{stem}_grid.png"))
                summary.separated += 1
            except OSError as e:
                failed(item, f"cannot write its outputs in {out_dir} ({e.strerror})")

    for index, (item, path, error) in enumerate(expanded):
        if error:
            failed(item, error)
            continue
        try:
            stems, mixtures, note = _load(path, separator)
        except InputError as e:
            failed(item, str(e))
            continue
        clash = next((s for s in stems if s in owners), None)
        if clash:
            failed(item, f"its output {clash}_a.png would overwrite that of {owners[clash]}: "
                         "rename one of them")
            continue
        owners.update(dict.fromkeys(stems, item))
        if note and note not in announced:
            announced.add(note)
            say(f"note: {note} (first seen in {item})")
        pending += [(stem, mixture, item) for stem, mixture in zip(stems, mixtures)]
        read += len(stems)
        while len(pending) >= batch_size:
            flush(batch_size)
            if time.monotonic() - last_progress > _PROGRESS_SECONDS:
                last_progress = time.monotonic()
                say(f"progress: {summary.separated} of the {read} mixtures read so far are "
                    f"separated (input {index + 1} of {len(expanded)})")
    if pending:
        flush(len(pending))
    return summary


def provider_line(separator):
    """Says what runs the model, and plainly when onnxruntime fell back to CPU."""
    line = f"running {separator.path} on {separator.provider}"
    skipped = [p for p in separator.tried_providers if p != separator.provider]
    if separator.provider == ONNX_PROVIDERS["cpu"] and skipped:
        line += (f": fell back to CPU, onnxruntime could not load {' or '.join(skipped)} (missing "
                 "GPU libraries or no GPU; --provider=cuda shows onnxruntime's reason)")
    return line


def _define_flags():
    flags.DEFINE_string("model", None, "Exported separator: separator.onnx, separator_fp16.onnx or "
                        "a saved_model directory (python -m export.onnx).")
    flags.DEFINE_string("out", None, "Output directory for the separated PNGs (created).")
    flags.DEFINE_enum("provider", "auto", PROVIDER_CHOICES, "onnxruntime execution provider: auto "
                      "(TensorRT, then CUDA, then CPU, whichever loads) or one forced; SavedModels "
                      "take auto or cpu.")
    flags.DEFINE_integer("batch_size", 256, "Mixtures per model call.", lower_bound=1)
    flags.DEFINE_bool("grid", False, "Also write <stem>_grid.png: mixture | source a | source b.")
    flags.mark_flags_as_required(["model", "out"])


def main(inputs):
    if not inputs:
        cli.fail("no INPUT given: name image files, folders, .npy or .npz files after the flags")
    cli.configure_logging()
    values = flags.FLAGS
    try:
        os.makedirs(values.out, exist_ok=True)
        if not os.access(values.out, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        cli.fail(f"cannot write to --out={values.out} ({e.strerror}): choose a writable directory")
    try:
        separator = Separator.load(values.model, provider=values.provider)
    except UserError as e:
        cli.fail(e)
    print(provider_line(separator))
    summary = separate_inputs(separator, inputs, values.out, values.batch_size, values.grid)
    print(f"separated {summary.separated} mixtures into {values.out}")
    if summary.failures:
        cli.fail(f"{len(summary.failures)} input(s) failed (see above)",
             code=FAILED_INPUTS_EXIT_CODE)


def run():
    """Console-script entry point (`aur-tf-separate`)."""
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags_and_inputs)


if __name__ == "__main__":
    run()
