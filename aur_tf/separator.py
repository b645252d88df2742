"""The separation function of a trained mask net and `Separator`, the API to run exported ones.

Separation (Hoshen, ICASSP 2019): for a mixture y = (x + b) / 2 in [0, 1] the mask net gives
M(y) in (0, 1), and the two sources are estimated at the clean images' scale as

    source_a = 2 * y * M(y),    source_b = 2 * y - source_a = 2 * y * (1 - M(y)).

Both estimates lie in [0, 2 * y], so in [0, 2]; they are not clipped (a writer of 8-bit images
clips them to [0, 1]).

Runs trained with `invert` (the paper's Shoes and Bags) learned on 1 - image. Their separation
function takes natural images anyway: it computes y' = 1 - y, separates y', and returns
1 - estimate, so callers never invert by hand (estimates then lie in [-1, 1]). The returned `mask`
is always M(y') of the network's own input. Exports record this as the metadata entry
`inverted_inputs`.

An exported separator (see `export/onnx.py`) has one float32 input `mixture`
`[batch, H, W, C]` in [0, 1] and float32 outputs `source_a`, `source_b`, `mask` of the same
shape. TensorFlow and onnxruntime are imported only when needed, so running an ONNX separator
never loads TensorFlow and `import aur_tf` stays light: the ONNX path needs only onnxruntime (or
onnxruntime-gpu) and numpy.
"""

import concurrent.futures
import contextlib
import dataclasses
import functools
import io
import json
import os

import numpy as np

from aur_tf import machine, safe_io
from aur_tf.errors import UserError

INPUT_NAME = "mixture"
OUTPUT_NAMES = ("source_a", "source_b", "mask")
# Metadata of a SavedModel separator, as a JSON object of strings (the same entries as the ONNX
# metadata_props). `assets.extra` is the SavedModel folder for files the graph does not use.
SAVED_MODEL_METADATA = os.path.join("assets.extra", "metadata.json")

# onnxruntime execution providers by their command-line name, fastest first.
ONNX_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
PROVIDER_CHOICES = ("auto", *ONNX_PROVIDERS)
_ORT_DEFAULT_LOG_SEVERITY = 2  # warnings: onnxruntime's own default
_ORT_FATAL_ONLY = 4


def separation_function(mask_net, invert, dtype="float32"):
    """The serving computation of a mask net, as a `tf.function` with a fixed signature.

    Args:
      mask_net: a Keras mask net `[batch, H, W, C] -> [batch, H, W, C]` masks in (0, 1), computing
        in `dtype`.
      invert: whether the net was trained on inverted images (`Config.invert`); see the module
        docstring for how this is baked in.
      dtype: of the input, the arithmetic and the outputs: "float32" for serving, "float64" for
        the reference the export's parity check measures float32 rounding against.

    Returns:
      A `tf.function` taking `mixture` `[batch, H, W, C]` `dtype` in [0, 1] (batch dynamic) and
      returning `{"source_a", "source_b", "mask"}`, each `[batch, H, W, C]` `dtype`. BatchNorm
      runs in inference mode.
    """
    import tensorflow as tf

    _, height, width, channels = mask_net.input_shape

    @tf.function(
        input_signature=[tf.TensorSpec([None, height, width, channels], dtype, name=INPUT_NAME)]
    )
    def separate(mixture):
        y = 1.0 - mixture if invert else mixture
        mask = mask_net(y, training=False)
        # 2y once: a repeated subexpression would be merged by tf2onnx under a name that varies
        # from process to process, and the exported file would not be reproducible.
        twice_y = 2.0 * y
        source_a = twice_y * mask
        source_b = twice_y - source_a
        if invert:
            source_a, source_b = 1.0 - source_a, 1.0 - source_b
        return {"source_a": source_a, "source_b": source_b, "mask": mask}

    return separate


# Separators that ship with aur_tf, by name: exported from the runs of `docs/results/runs/` whose
# records they carry in `export.json`, so separating works right after install, without training.
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped")
SHIPPED = {
    "mnist": "mnist/separator.onnx",
    "mnist_int8": "mnist/separator_int8.onnx",
    "fashion_shoes_bags": "fashion_shoes_bags/separator.onnx",
    "fashion_shoes_bags_int8": "fashion_shoes_bags/separator_int8.onnx",
}


def shipped_path(model):
    """The file of shipped separator `model` when it names one and no such path exists, else
    `model` itself."""
    if model in SHIPPED and not os.path.exists(model):
        return os.path.join(SHIPPED_DIR, SHIPPED[model])
    return model


class Separator:
    """An exported separator (ONNX file or TF SavedModel directory), ready to separate images.

    Attributes:
      path: the file or directory it was loaded from.
      image_size: height and width of the images it takes.
      channels: 1 or 3.
      metadata: dict of strings written at export (image_size, channels, value_range,
        inverted_inputs, opset, training_config, eval_psnr_db, ...; empty if there were none).
      provider: what actually runs it: the onnxruntime execution provider in use (read from the
        session after creation, since onnxruntime silently falls back to CPU when a GPU provider
        cannot be loaded), or "tensorflow-cpu" / "tensorflow-gpu" for a SavedModel.
      tried_providers: the onnxruntime providers asked for, in order of preference; more than one
        with `provider` CPU means the GPU providers could not be used.
      fixed_batch: the batch size the model's input is fixed to, or None if it takes any (as
        `python -m export.onnx` writes it); `separate` then runs it on exactly that many images.
    """

    def __init__(
        self,
        path,
        run,
        image_size,
        channels,
        metadata,
        provider,
        tried_providers=(),
        fixed_batch=None,
    ):
        self.path = path
        self._run = run
        self.image_size = image_size
        self.channels = channels
        self.metadata = metadata
        self.provider = provider
        self.tried_providers = tuple(tried_providers)
        self.fixed_batch = fixed_batch

    @classmethod
    def load(cls, path, provider="auto", options=None):
        """Loads `path`: a `.onnx` file (onnxruntime) or a SavedModel directory (TensorFlow).

        Args:
          path: the exported separator, or the name of a shipped one (`SHIPPED`).
          provider: "auto" (ONNX: TensorRT, then CUDA, then CPU, whichever onnxruntime can load;
            SavedModel: TensorFlow's own placement), or one of "tensorrt", "cuda", "cpu" to force
            it (ONNX), "cpu" (SavedModel).
          options: `ProviderOptions` for an ONNX file (GPU, TensorRT engine, CPU threads); None
            for the defaults.

        Raises:
          UserError: `path` is missing, unreadable or not a separator, the forced provider is
            not available, or `options` do not apply to `provider` or to a SavedModel.
        """
        if provider not in PROVIDER_CHOICES:
            raise UserError(
                f"unknown provider {provider!r}: use one of {', '.join(PROVIDER_CHOICES)}"
            )
        path = shipped_path(path)
        options = options or ProviderOptions()
        options.check(provider)
        if os.path.isdir(path):
            if options != ProviderOptions():
                raise UserError(
                    f"{options.flags()} apply to .onnx separators only, not to the "
                    f"SavedModel {path}"
                )
            return _load_saved_model(path, provider)
        if not os.path.exists(path):
            raise UserError(
                f"separator {path} does not exist: give an exported .onnx file or "
                "SavedModel directory (see python -m export.onnx)"
            )
        # onnxruntime would wait for ever on a FIFO, and has no business reading a device.
        kind = safe_io.file_type(os.stat(path).st_mode)
        if kind:
            raise UserError(
                f"separator {path} is {kind}, not a regular file: give an exported "
                ".onnx file or SavedModel directory"
            )
        return _load_onnx(path, provider, options)

    @property
    def input_shape(self):
        """`(H, W, C)` of one image."""
        return (self.image_size, self.image_size, self.channels)

    def prepare(self, mixtures):
        """Checks mixtures and brings them to the model's input form.

        Args:
          mixtures: `[N, H, W, C]`, one image `[H, W, C]`, or (1 channel) `[H, W]`; uint8 0..255 or
            float in [0, 1].

        Returns:
          `[N, H, W, C]` float32 in [0, 1].

        Raises:
          ValueError: wrong shape, dtype, range, or NaN/Inf values.
        """
        array = np.asarray(mixtures)
        if array.ndim == 2 and self.channels == 1:
            array = array[..., np.newaxis]
        if array.ndim == 3:
            array = array[np.newaxis]
        if array.ndim != 4 or array.shape[1:] != self.input_shape:
            height, width, channels = self.input_shape
            single = f"[{height}, {width}, {channels}]" + (
                f" or [{height}, {width}]" if channels == 1 else ""
            )
            raise ValueError(
                f"mixtures of shape {list(np.shape(mixtures))} do not fit this "
                f"separator: it takes [N, {height}, {width}, {channels}] or one "
                f"image {single}"
            )
        if array.dtype == np.uint8:
            return array.astype(np.float32) / np.float32(255)
        if array.dtype.kind != "f":
            raise ValueError(f"mixtures are {array.dtype}: give uint8 0..255 or float in [0, 1]")
        if not np.isfinite(array).all():
            raise ValueError("mixtures contain NaN or Inf")
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError(
                f"float mixtures span [{array.min():g}, {array.max():g}], not "
                "[0, 1]: divide 0..255 data by 255"
            )
        # onnxruntime takes contiguous buffers only; views of a caller's array may not be.
        return np.ascontiguousarray(array, dtype=np.float32)

    def separate(self, mixtures, batch_size=256, return_mask=False):
        """Separates mixtures into their two source estimates.

        Args:
          mixtures: as for `prepare`.
          batch_size: images per call of the model (bounds memory; larger is faster on GPUs);
            a model with a `fixed_batch` always takes that many, the last call padded with zeros.
          return_mask: also return the mask M.

        Returns:
          `(source_a, source_b)` or `(source_a, source_b, mask)`, float32 arrays shaped like
          `mixtures`: estimates in [0, 2] ([-1, 1] for inverted runs), masks in (0, 1).

        Raises:
          ValueError: see `prepare`; also a `batch_size` below 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        batch = self.prepare(mixtures)
        names = OUTPUT_NAMES if return_mask else OUTPUT_NAMES[:2]
        step = self.fixed_batch or batch_size
        chunks = [self._run_chunk(batch[i : i + step]) for i in range(0, len(batch), step)]
        shape = np.shape(mixtures) if np.ndim(mixtures) < 4 else batch.shape
        return tuple(
            np.concatenate([c[name] for c in chunks]).reshape(shape)
            if chunks
            else np.zeros(shape, np.float32)
            for name in names
        )

    def _run_chunk(self, chunk):
        """The model's outputs for `[n, H, W, C]`, zero-padded to `fixed_batch` when it has one."""
        if self.fixed_batch is None or len(chunk) == self.fixed_batch:
            return self._run(chunk)
        padded = np.zeros((self.fixed_batch, *self.input_shape), np.float32)
        padded[: len(chunk)] = chunk
        return {name: output[: len(chunk)] for name, output in self._run(padded).items()}


@dataclasses.dataclass(frozen=True)
class ProviderOptions:
    """The onnxruntime settings that matter for a separator, named as the command-line flags.

    Attributes:
      device_id: the GPU the CUDA and TensorRT providers run on (>= 0).
      trt_fp16: let TensorRT build a float16 engine (float32 inputs and outputs stay).
      trt_engine_cache: a folder where TensorRT keeps built engines, so later loads skip the
        minutes of engine building; None builds afresh each time.
      threads: CPU threads (>= 1) of onnxruntime's CPU provider. A call of at least that many
        images is split into one part per thread, each run single-threaded at the same time; a
        smaller call runs on that many intra-op threads. None: one thread per CPU this process
        may use (onnxruntime's own intra-op default, one per physical core, for small calls).
    """

    device_id: int = 0
    trt_fp16: bool = False
    trt_engine_cache: str | None = None
    threads: int | None = None

    def flags(self):
        """The non-default settings as flags, e.g. `--device_id=1 --trt_fp16`."""
        default = ProviderOptions()
        return " ".join(
            f"--{field.name}" if value is True else f"--{field.name}={value}"
            for field in dataclasses.fields(self)
            if (value := getattr(self, field.name)) != getattr(default, field.name)
        )

    def check(self, provider):
        """UserError if a setting is out of range or cannot apply to `provider`."""
        if not isinstance(self.device_id, int) or self.device_id < 0:
            raise UserError(f"--device_id={self.device_id} is not a GPU: give 0 for the first")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise UserError(
                f"--threads={self.threads} must be >= 1 (or left out: one per physical core)"
            )
        if provider == "cpu" and self.device_id:
            raise UserError(
                f"--device_id={self.device_id} applies to --provider=cuda, tensorrt "
                "or auto, not cpu"
            )
        if provider in ("cpu", "cuda") and (self.trt_fp16 or self.trt_engine_cache):
            raise UserError(
                f"--trt_fp16 and --trt_engine_cache apply to --provider=tensorrt or "
                f"auto, not {provider}"
            )
        if (
            self.trt_engine_cache
            and os.path.exists(self.trt_engine_cache)
            and not os.path.isdir(self.trt_engine_cache)
        ):
            raise UserError(
                f"--trt_engine_cache={self.trt_engine_cache} is not a folder: give "
                "a folder for TensorRT's engines (created if missing)"
            )

    def for_provider(self, name):
        """onnxruntime's options dict for the execution provider `name` (its values strings)."""
        if name == ONNX_PROVIDERS["tensorrt"]:
            options = {"device_id": str(self.device_id), "trt_fp16_enable": str(self.trt_fp16)}
            if self.trt_engine_cache:
                options.update(
                    trt_engine_cache_enable="True",
                    trt_engine_cache_path=os.path.abspath(self.trt_engine_cache),
                )
            return options
        if name == ONNX_PROVIDERS["cuda"]:
            return {"device_id": str(self.device_id)}
        return {}


def _load_onnx(path, provider, options):
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider == "auto":
        wanted = [p for p in ONNX_PROVIDERS.values() if p in available]
    elif ONNX_PROVIDERS[provider] in available:
        wanted = [ONNX_PROVIDERS[provider]]
    else:
        raise UserError(
            f"provider {provider} is not in this onnxruntime build (it has "
            f"{', '.join(available)}): use --provider=auto or cpu"
        )
    if options.trt_engine_cache and ONNX_PROVIDERS["tensorrt"] in wanted:
        try:
            os.makedirs(options.trt_engine_cache, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"cannot create --trt_engine_cache={options.trt_engine_cache} "
                f"({e.strerror}): give a writable folder"
            ) from None
    session = _onnx_session(ort, path, wanted, options, quiet=provider == "auto")
    in_use = session.get_providers()[0]
    if provider != "auto" and in_use != wanted[0]:
        raise UserError(
            f"provider {provider} was asked for but onnxruntime could not load "
            f"{wanted[0]} for {path} (it fell back to {in_use}; see its messages "
            "above): install the GPU libraries it names, or use --provider=auto or cpu"
        )
    image_size, channels, fixed_batch = _check_onnx_interface(session, path)
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    # A failing run raises, and the caller reports it; onnxruntime's own log line about it would
    # be a second message.
    run_options = ort.RunOptions()
    run_options.log_severity_level = _ORT_FATAL_ONLY

    def call(session, batch):
        return dict(
            zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch}, run_options))
        )

    workers = _cpu_threads(options) if in_use == ONNX_PROVIDERS["cpu"] else 1
    if workers == 1 or fixed_batch is not None:
        run = functools.partial(call, session)
    else:
        run = _data_parallel(
            functools.partial(call, session),
            functools.partial(call, _onnx_session(ort, path, [in_use], options, True, threads=1)),
            workers,
        )
    return Separator(path, run, image_size, channels, metadata, in_use, wanted, fixed_batch)


def _cpu_threads(options):
    """CPU threads of a separator on onnxruntime's CPU provider (`ProviderOptions.threads`)."""
    return options.threads or machine.usable_cores()


def _data_parallel(run_threaded, run_single, workers):
    """A run function that splits batches of >= `workers` images over `workers` threads.

    onnxruntime's CPU Conv and ConvTranspose parallelise one batch poorly on a few cores, so
    single-threaded runs of a part of the batch each beat one multi-threaded run
    (docs/deployment.md has the figures). Below one image per thread the
    intra-op threads are the only parallelism there is, so `run_threaded` takes those batches.

    Args:
      run_threaded: `[n, H, W, C] -> outputs` on a session with intra-op threads.
      run_single: the same on a session with one intra-op thread; onnxruntime's `run` may be
        called from several threads at once.
      workers: threads, >= 2.
    """
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="aur_tf-separator")

    def run(batch):
        if len(batch) < workers:
            return run_threaded(batch)
        parts = list(pool.map(run_single, np.array_split(batch, workers)))
        return {name: np.concatenate([part[name] for part in parts]) for name in OUTPUT_NAMES}

    return run


def _onnx_session(ort, path, providers, options, quiet, threads=None):
    """An InferenceSession on the first of `providers` that onnxruntime can load, with
    `threads` intra-op threads on CPU (None: `options.threads`, else onnxruntime's default).

    onnxruntime-gpu lists CUDA and TensorRT even where their libraries are missing, then logs
    errors and falls back. With `quiet` that chatter is suppressed: the caller reports the
    provider actually in use in one line instead. A forced provider keeps onnxruntime's messages,
    which name the missing library.
    """
    stdout = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
    if quiet:
        ort.set_default_logger_severity(_ORT_FATAL_ONLY)
    session_options = ort.SessionOptions()
    threads = threads or options.threads
    if threads:
        session_options.intra_op_num_threads = threads
    try:
        with stdout:
            return ort.InferenceSession(
                path,
                session_options,
                providers=[(name, options.for_provider(name)) for name in providers],
            )
    # onnxruntime's load errors (InvalidProtobuf, Fail, NoSuchFile, ...) derive from Exception
    # directly, so nothing narrower catches them all.
    except Exception as error:  # noqa: BLE001
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"cannot load {path} with onnxruntime ({reason}): give a separator "
            "written by python -m export.onnx"
        ) from None
    finally:
        if quiet:
            ort.set_default_logger_severity(_ORT_DEFAULT_LOG_SEVERITY)


def _check_onnx_interface(session, path):
    """`(image_size, channels, fixed batch or None)` of a separator session; UserError if it is
    not one."""
    inputs = session.get_inputs()
    outputs = {o.name for o in session.get_outputs()}
    shape = inputs[0].shape if len(inputs) == 1 else None
    fits = (
        len(inputs) == 1
        and inputs[0].name == INPUT_NAME
        and inputs[0].type == "tensor(float)"
        and len(shape) == 4
        and all(isinstance(d, int) for d in shape[1:])
        and shape[1] == shape[2]
        and set(OUTPUT_NAMES) <= outputs
        # A fixed batch below 1 takes no image; a symbolic one (a str or None) takes any.
        and not (isinstance(shape[0], int) and shape[0] < 1)
    )
    if not fits:
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise UserError(
            f"{path} is not an aur_tf separator: it takes {found} and gives "
            f"{', '.join(sorted(outputs))}, but a separator takes one float "
            f"'{INPUT_NAME}' [batch, H, W, C] and gives {', '.join(OUTPUT_NAMES)}; "
            "export one with python -m export.onnx"
        )
    return shape[1], shape[3], shape[0] if isinstance(shape[0], int) else None


def _load_saved_model(path, provider):
    if provider not in ("auto", "cpu"):
        raise UserError(
            f"provider {provider} applies to .onnx separators only; a SavedModel "
            f"({path}) runs with --provider=auto or cpu"
        )
    import tensorflow as tf

    if not tf.saved_model.contains_saved_model(path):
        raise UserError(
            f"{path} is a directory without a SavedModel: give an exported .onnx "
            "file or the saved_model directory written by python -m export.onnx"
        )
    try:
        loaded = tf.saved_model.load(path)
    except (tf.errors.OpError, ValueError, OSError) as error:
        raise UserError(
            f"cannot load SavedModel {path} ({type(error).__name__}): it is damaged; "
            "re-export it with python -m export.onnx"
        ) from None
    signature = loaded.signatures.get("serving_default")
    spec = signature.structured_input_signature[1].get(INPUT_NAME) if signature else None
    if (
        spec is None
        or spec.dtype != tf.float32
        or spec.shape.rank != 4
        or not set(OUTPUT_NAMES) <= set(signature.structured_outputs)
        or (spec.shape[0] is not None and spec.shape[0] < 1)
    ):
        raise UserError(
            f"{path} is not an aur_tf separator: its serving_default signature must "
            f"take '{INPUT_NAME}' [batch, H, W, C] float32 and give "
            f"{', '.join(OUTPUT_NAMES)}; export one with python -m export.onnx"
        )
    metadata_path = os.path.join(path, SAVED_MODEL_METADATA)
    metadata = {}
    if os.path.exists(metadata_path):
        try:
            with safe_io.open_regular(metadata_path) as f:
                metadata = json.load(f)
        except (OSError, ValueError, safe_io.FileRefused) as error:
            raise UserError(
                f"cannot read {metadata_path} ({error}): re-export the separator "
                "with python -m export.onnx"
            ) from None
    on_cpu = provider == "cpu" or not tf.config.list_logical_devices("GPU")
    device = "/CPU:0" if on_cpu else "/GPU:0"

    def run(batch):
        # `loaded` must stay referenced: the signature holds only weak references to its variables.
        with tf.device(device):
            outputs = loaded.signatures["serving_default"](**{INPUT_NAME: tf.constant(batch)})
        return {name: outputs[name].numpy() for name in OUTPUT_NAMES}

    fixed_batch, image_size, _, channels = spec.shape.as_list()
    return Separator(
        path,
        run,
        image_size,
        channels,
        metadata,
        "tensorflow-cpu" if on_cpu else "tensorflow-gpu",
        fixed_batch=fixed_batch,
    )
