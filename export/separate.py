"""Separate mixtures with an exported separator.

    python -m export.separate --model=W/export/separator.onnx --out=DIR [--provider=auto]
        [--device_id=0] [--trt_fp16] [--trt_engine_cache=DIR] [--threads=N]
        [--batch_size=256] [--grid] INPUT...
    (installed: aur-tf-separate ...)

--model is a `separator.onnx`, `separator_fp16.onnx` or `separator_int8.onnx` (onnxruntime) or a
`saved_model` directory (TensorFlow) written by `python -m export.onnx`. With an ONNX model this
command imports no TensorFlow: onnxruntime(-gpu), numpy, Pillow and absl-py are all it needs.
--device_id picks the GPU of the CUDA and TensorRT providers, --trt_fp16 lets TensorRT build a
float16 engine and --trt_engine_cache keeps built engines in a folder (TensorRT takes minutes to
build one); --threads sets onnxruntime's CPU threads. Each INPUT is
  * an image file (.png, .jpg, .jpeg): one mixture, giving DIR/<stem>_a.png and DIR/<stem>_b.png;
  * a folder: every such image directly inside it (sorted; subfolders are not entered);
  * a .npy array of mixtures [N, H, W, C] ([N, H, W] for 1-channel models), uint8 0..255,
    uint16 0..65535 or float in [0, 1], giving <stem>_<index>_a.png and <stem>_<index>_b.png;
  * a .npz archive: its array `mixtures` if it has one (other members, e.g. the clean sources,
    are then not read), else every array in it, giving <stem>_<key>_<index>_a.png; a member
    that is not a .npy array makes the archive a bad INPUT.
With --grid, <stem>_grid.png shows mixture | source a | source b side by side. Output names keep
letters, digits and `-_.+` of <stem> and <key>; any other character (a space, a `/` in an
archive member's name, an undecodable byte) becomes `_`, as does a leading `.`, so no output
lands outside DIR and none is hidden.

Images are never resized: they must already have the model's height and width. Only the PNG and
JPEG decoders run, whatever the extension. Conversions made (`aur_tf.images`, reported once per
INPUT): 16-bit images are scaled to [0, 1] by 1/65535; RGBA images lose their alpha channel for
3-channel models and become grayscale (luma) for 1-channel models; gray + alpha becomes gray;
palette and 1-bit images are expanded to RGB or gray first. A channel count that still differs
from the model's is an error, as is any other size.

Outputs are the source estimates clipped to [0, 1] and stored as 8-bit PNG, each written under a
fresh temporary name in DIR and renamed, so no half-written file carries a final name (see
`aur_tf.safe_io.OutputDirectory`). DIR must not be one of the input folders (its outputs would
mix with the images being read; a subfolder of one is fine, as folders are listed once, before
anything is written, and their subfolders are not entered). An output that would replace an
INPUT, a symbolic link or anything but a regular file fails its INPUT instead, so nothing
outside DIR and no INPUT is ever changed. Only regular files are read: a FIFO, socket or
device is a bad INPUT, never waited on, and an array's size is checked against its file (and
a tenth of physical memory) before it is allocated.

A bad INPUT (missing, corrupt, not a regular file, wrong size or channels, NaN values, failing
in the model, ...) is reported as one line `error: <input>: <reason>` on stderr and the others
are still processed; the exit status is then 1. Bad flags, an unusable --model or --out end at
once with one line and exit status 2. Undecodable bytes and control characters in names are
printed escaped (`\\xff`, `\\n`), so every message stays one line.
"""

import dataclasses
import io
import os
import sys
import time
import zipfile
import zlib

import numpy as np
from absl import app, flags
from PIL import Image

from aur_tf import cli, images, safe_io
from aur_tf.errors import UserError
from aur_tf.separator import ONNX_PROVIDERS, PROVIDER_CHOICES, ProviderOptions, Separator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_KEY = "mixtures"
FAILED_INPUTS_EXIT_CODE = 1
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
        return (
            array.astype(np.float32) / np.float32(_SIXTEEN_BIT_MAX),
            "16-bit values scaled to [0, 1]",
        )
    return array, None


def _open_input(path):
    """`safe_io.open_regular(path)`, with its refusals and OS errors as InputError."""
    try:
        return safe_io.open_regular(path)
    except safe_io.FileRefused as e:
        raise InputError(str(e)) from None
    except OSError as e:
        raise InputError(f"cannot open it ({e.strerror})") from None


def _max_array_bytes():
    """Bytes of array data one .npy/.npz INPUT may hold: a tenth of physical memory, since its
    float32 copy (4x the bytes of uint8 data) and the batches made from it live beside it."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 10


def read_image(path, channels, size=None):
    """Decodes one image file into `([H, W, channels] float32 in [0, 1], note or None)`.

    `aur_tf.images.decode` applies the colour rules shared with image-folder sources; then, toward
    the model's channel count, a colour image that had alpha becomes gray (luma) for 1-channel
    models. Any other channel count that differs from `channels` is an error. With `size`, an
    image that is not `size` x `size` is refused from its header, before its pixels are decoded
    (so a huge one costs no memory).
    """
    with _open_input(path) as f:
        try:
            decoded = images.decode(f, size)
        except images.WrongSize as e:
            raise InputError(
                f"image is {e.width}x{e.height} but the model takes {size}x{size}: resize or pad it"
            ) from None
        except images.ImageError as e:
            raise InputError(
                f"cannot read the image ({e}): it is corrupt or not an image"
            ) from None
    array, note = decoded.pixels, None
    if decoded.sixteen_bit:
        note = "16-bit values scaled to [0, 1]"
    elif decoded.had_alpha:
        gray = array.shape[-1] == 1
        note = f"{'LA' if gray else 'RGBA'} images: alpha dropped"
        if not gray and channels == 1:
            array, note = images.luma(array), f"{note}, converted to grayscale"
    if array.shape[-1] != channels:
        raise InputError(
            f"image has {array.shape[-1]} channel(s) but the model takes {channels}: "
            f"convert it to {'grayscale' if channels == 1 else 'RGB'}"
        )
    return array, note


def _array_keys(keys):
    """The .npz arrays separated: `mixtures` alone if there is one, else all, sorted."""
    return [ARRAY_KEY] if ARRAY_KEY in keys else sorted(keys)


def read_array_rows(path, channels, max_bytes=None):
    """`[(stem suffix, rows [N, H, W, C] or [N, H, W]), ...]` and a note, from a .npy or .npz.

    At most `max_bytes` of array data are read (default: `_max_array_bytes()`); headers that
    declare more, or more than their file holds, are refused before anything is allocated.
    """
    max_bytes = _max_array_bytes() if max_bytes is None else max_bytes
    try:
        if path.lower().endswith(".npz"):
            arrays = [
                ("" if key == ARRAY_KEY else f"_{key}", array)
                for key, array in safe_io.load_npz(path, max_bytes, select=_array_keys)
            ]
        else:
            arrays = [("", safe_io.load_npy(path, max_bytes))]
    except safe_io.FileRefused as e:
        raise InputError(str(e)) from None
    except OSError as e:
        raise InputError(f"cannot read it ({e.strerror or e})") from None
    # Reading a damaged archive fails with any of these, depending on where it breaks.
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(f"cannot read the array file ({e}): it is corrupt") from None
    if not arrays:
        raise InputError("the .npz archive holds no arrays")
    rows, notes = [], []
    for suffix, array in arrays:
        if array.ndim == 3 and channels == 1:
            array = array[..., np.newaxis]
        if array.ndim != 4:
            where = f" (array {suffix[1:]})" if suffix else ""
            raise InputError(
                f"array{where} of shape {list(array.shape)} is not a stack of "
                "mixtures [N, H, W, C]" + (" or [N, H, W]" if channels == 1 else "")
            )
        array, note = _unit_float(array)
        rows.append((suffix, array))
        notes.append(note)
    return rows, next((n for n in notes if n), None)


def _expand(inputs):
    """`(input, file or None, error or None)` for each INPUT, folders replaced by their images.

    Folder entries are listed once, here, before anything is written.
    """
    for item in inputs:
        if os.path.isdir(item):
            try:
                names = os.listdir(item)
            except OSError as e:
                yield item, None, f"cannot list the folder ({e.strerror}): make it readable"
                continue
            files = sorted(
                os.path.join(item, name) for name in names if name.lower().endswith(IMAGE_SUFFIXES)
            )
            if not files:
                yield item, None, f"folder has no {'/'.join(IMAGE_SUFFIXES)} images"
            for path in files:
                yield path, path, None
        elif not os.path.exists(item):
            yield item, None, "does not exist"
        else:
            yield item, item, None


def _load(path, separator):
    """`(output stems, mixtures [n, H, W, C] float32 in [0, 1], note)` of one input file."""
    stem, suffix = os.path.splitext(os.path.basename(path))
    try:
        if suffix.lower() in IMAGE_SUFFIXES:
            array, note = read_image(path, separator.channels, separator.image_size)
            return [safe_io.safe_name(stem)], separator.prepare(array), note
        if suffix.lower() in (".npy", ".npz"):
            arrays, note = read_array_rows(path, separator.channels)
            stems, mixtures = [], []
            for key_suffix, rows in arrays:
                prepared = separator.prepare(rows)
                digits = len(str(max(len(prepared) - 1, 0)))
                name = safe_io.safe_name(f"{stem}{key_suffix}")
                stems += [f"{name}_{i:0{digits}d}" for i in range(len(prepared))]
                mixtures.append(prepared)
            if not stems:
                raise InputError("holds no mixtures (0 rows)")
            return stems, np.concatenate(mixtures), note
    except ValueError as e:  # from Separator.prepare: shape, dtype, range or NaN
        raise InputError(str(e)) from None
    raise InputError(f"is not an image ({', '.join(IMAGE_SUFFIXES)}), folder, .npy or .npz")


def png_bytes(array):
    """The bytes of an 8-bit PNG of `[H, W, C]` values, clipped to [0, 1]."""
    pixels = np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _describe(error):
    """`Type: first line of the message` of an exception no narrower handler expected, so that a
    bug stays recognisable in the one line reporting it."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _refuse_input_folder_as_out(inputs, out_dir):
    """UserError if `out_dir` is one of the folders in `inputs` (under any path)."""
    out = safe_io.file_identity(out_dir)
    for item in inputs:
        if out and os.path.isdir(item) and safe_io.file_identity(item) == out:
            raise UserError(
                f"--out={out_dir} is the input folder {item}: its outputs would be "
                "mixed with the images read there and could replace them; choose "
                "another --out"
            )


def separate_inputs(
    separator, inputs, out_dir, batch_size=256, grid=False, say=print, complain=None
):
    """Separates every INPUT (see the module docstring) into PNGs in `out_dir`.

    Mixtures from many inputs share model calls of up to `batch_size` images. A failing input is
    reported through `complain` and skipped; the others go on. Whatever makes one input fail
    (reading, the model, writing its outputs) is reported as one line; an exception of a kind no
    handler expects is reported with its type.

    Args:
      separator: a loaded `Separator`.
      inputs: paths of image files, folders, .npy or .npz files.
      out_dir: existing, writable output directory; not one of the folders in `inputs`.
      batch_size: mixtures per model call.
      grid: also write `<stem>_grid.png` (mixture | source a | source b).
      say: called with progress and note lines (printable, one line each).
      complain: called with each failure line (printable, one line); default prints it to
        stderr.

    Returns:
      A `Summary`; its failures hold the raw input paths and reasons.

    Raises:
      UserError: `out_dir` is one of the input folders or cannot be opened.
    """
    complain = complain or (lambda line: print(line, file=sys.stderr))
    summary, pending, owners, announced = Summary(), [], {}, set()
    read = 0  # mixtures read so far, for progress lines
    _refuse_input_folder_as_out(inputs, out_dir)
    expanded = list(_expand(inputs))
    protected = {safe_io.file_identity(path): path for _, path, _ in expanded if path}
    kinds = ("a", "b", "grid") if grid else ("a", "b")
    try:
        outputs = safe_io.OutputDirectory(out_dir, protected)
    except OSError as e:
        raise UserError(
            f"cannot write to --out={out_dir} ({e.strerror}): choose a writable directory"
        ) from None
    last_progress = time.monotonic()

    # Failures are tracked by position in `expanded`, not by path: the same file given twice
    # must not lose the outputs of its first, good, occurrence when the second fails.
    failed_entries = set()

    def failed(entry, reason):
        item = expanded[entry][0]
        failed_entries.add(entry)
        summary.failures[item] = reason
        complain(safe_io.printable(f"error: {item}: {reason}"))

    def flush(count):
        nonlocal pending
        batch, pending = pending[:count], pending[count:]
        try:
            sources_a, sources_b = separator.separate(
                np.stack([m for _, m, _ in batch]), batch_size=batch_size
            )
        # The model failing on one batch (a runtime error of the graph, memory) fails the inputs
        # in it, not the inputs still to come.
        except Exception as e:  # noqa: BLE001
            for entry in dict.fromkeys(entry for _, _, entry in batch):
                if entry not in failed_entries:
                    failed(entry, f"the model failed on the batch holding it ({_describe(e)})")
            return
        for (stem, mixture, entry), a, b in zip(batch, sources_a, sources_b):
            if entry in failed_entries:  # an earlier write or batch of the same input failed
                continue
            images = {"a": a, "b": b}
            if grid:
                images["grid"] = np.concatenate([mixture, a, b], axis=1)
            try:
                for kind, image in images.items():
                    outputs.write(f"{stem}_{kind}.png", png_bytes(image))
                summary.separated += 1
            except safe_io.FileRefused as e:
                failed(entry, str(e))
            except OSError as e:
                failed(entry, f"cannot write its outputs in {out_dir} ({e.strerror or e})")
            except Exception as e:  # noqa: BLE001  (as for reading: this input only)
                failed(entry, f"cannot write its outputs in {out_dir} ({_describe(e)})")

    with outputs:
        for index, (item, path, error) in enumerate(expanded):
            if error:
                failed(index, error)
                continue
            try:
                stems, mixtures, note = _load(path, separator)
                clash = next((s for s in stems if s in owners), None)
                if clash:
                    raise InputError(
                        f"its output {clash}_a.png would overwrite that of "
                        f"{owners[clash]}: rename one of them"
                    )
                for stem in stems:  # before separating, so a refused input writes nothing
                    for kind in kinds:
                        outputs.check(f"{stem}_{kind}.png")
            except (InputError, safe_io.FileRefused) as e:
                failed(index, str(e))
                continue
            # Anything else going wrong with one input (a decoder's own exception, memory) fails
            # that input only.
            except Exception as e:  # noqa: BLE001
                failed(index, f"cannot read it ({_describe(e)})")
                continue
            owners.update(dict.fromkeys(stems, item))
            if note and note not in announced:
                announced.add(note)
                say(safe_io.printable(f"note: {note} (first seen in {item})"))
            pending += [(stem, mixture, index) for stem, mixture in zip(stems, mixtures)]
            read += len(stems)
            while len(pending) >= batch_size:
                flush(batch_size)
                if time.monotonic() - last_progress > _PROGRESS_SECONDS:
                    last_progress = time.monotonic()
                    say(
                        f"progress: {summary.separated} of the {read} mixtures read so far are "
                        f"separated (input {index + 1} of {len(expanded)})"
                    )
        if pending:
            flush(len(pending))
    return summary


def provider_line(separator):
    """Says what runs the model, and plainly when onnxruntime fell back to CPU."""
    line = f"running {separator.path} on {separator.provider}"
    skipped = [p for p in separator.tried_providers if p != separator.provider]
    if separator.provider == ONNX_PROVIDERS["cpu"] and skipped:
        line += (
            f": fell back to CPU, onnxruntime could not load {' or '.join(skipped)} (missing "
            "GPU libraries or no GPU; --provider=cuda shows onnxruntime's reason)"
        )
    return line


def define_provider_option_flags():
    """The flags of `ProviderOptions` (shared with bench/export_speed.py)."""
    flags.DEFINE_integer("device_id", 0, "GPU of the CUDA and TensorRT providers.")
    flags.DEFINE_bool(
        "trt_fp16", False, "TensorRT: build a float16 engine (float32 inputs and outputs stay)."
    )
    flags.DEFINE_string(
        "trt_engine_cache",
        None,
        "TensorRT: folder where built engines are "
        "kept and reused (created); without it every load builds the engine.",
    )
    flags.DEFINE_integer(
        "threads", None, "onnxruntime CPU threads (default: one per CPU this process may use)."
    )


def provider_options_from_flags():
    """The `ProviderOptions` the flags of `define_provider_option_flags` set."""
    values = flags.FLAGS
    return ProviderOptions(
        device_id=values.device_id,
        trt_fp16=values.trt_fp16,
        trt_engine_cache=values.trt_engine_cache,
        threads=values.threads,
    )


def _define_flags():
    flags.DEFINE_string(
        "model",
        None,
        "Exported separator: separator.onnx, separator_fp16.onnx, "
        "separator_int8.onnx or a saved_model directory (python -m export.onnx), "
        "or a shipped one by name: mnist (digits 0-4 vs 5-9), fashion_shoes_bags "
        "(Fashion-MNIST shoes vs bags) or their int8 twins mnist_int8, fashion_shoes_bags_int8.",
    )
    flags.DEFINE_string("out", None, "Output directory for the separated PNGs (created).")
    flags.DEFINE_enum(
        "provider",
        "auto",
        PROVIDER_CHOICES,
        "onnxruntime execution provider: auto "
        "(TensorRT, then CUDA, then CPU, whichever loads) or one forced; SavedModels "
        "take auto or cpu.",
    )
    define_provider_option_flags()
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
        cli.fail(
            safe_io.printable(
                f"cannot write to --out={values.out} ({e.strerror}): choose a writable directory"
            )
        )
    try:
        separator = Separator.load(
            values.model, provider=values.provider, options=provider_options_from_flags()
        )
    except UserError as e:
        cli.fail(safe_io.printable(e))
    print(safe_io.printable(provider_line(separator)))
    try:
        summary = separate_inputs(separator, inputs, values.out, values.batch_size, values.grid)
    except UserError as e:
        cli.fail(safe_io.printable(e))
    print(safe_io.printable(f"separated {summary.separated} mixtures into {values.out}"))
    if summary.failures:
        cli.fail(
            f"{len(summary.failures)} input(s) failed (see above)", code=FAILED_INPUTS_EXIT_CODE
        )


def run():
    """Console-script entry point (`aur-tf-separate`)."""
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags_and_inputs)


if __name__ == "__main__":
    run()
