"""How much memory a run needs at least, and how much this machine has free: absurd settings
(`--mask_width=100000`, `--train_mixtures=10**12`) are refused before anything is allocated,
instead of ending in a MemoryError traceback, an allocator abort or the kernel's OOM killer.

The estimates are lower bounds (the arrays the run cannot do without, nothing else), so a run
they refuse cannot fit; one they accept may still need more, which is then the allocator's to
report.
"""

import math

from aur_tf.errors import UserError

_FLOAT32_BYTES = 4
# A 4x4 kernel in every convolution of both nets (models.py).
_KERNEL_TAPS = 16
# The mask net halves the image this many times, doubling the channels each time (models.py).
_MASK_DOWN_STEPS = 4
# The discriminator halves the image down to 4x4 (models.py).
_DISC_LAST_SIDE = 4
# Every trained weight exists four times: the weight, its gradient and Adam's two moments.
_COPIES_PER_WEIGHT = 4
# Each mixture split holds three arrays of its images: mixtures, sources_a, sources_b.
_ARRAYS_PER_MIXTURE = 3
_MEMINFO = "/proc/meminfo"
_CGROUP_LIMIT = "/sys/fs/cgroup/memory.max"
_CGROUP_USED = "/sys/fs/cgroup/memory.current"


def available_bytes():
    """Memory this process can still allocate: the kernel's MemAvailable, lowered to what the
    cgroup (container) limit leaves; None where neither can be read (not Linux)."""
    limits = []
    try:
        with open(_MEMINFO) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        with open(_CGROUP_LIMIT) as f, open(_CGROUP_USED) as g:
            limit = f.read().strip()
            if limit != "max":
                limits.append(max(int(limit) - int(g.read()), 0))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def mixture_bytes(config):
    """Bytes of the train, validation and test mixtures `config` asks for (float32)."""
    count = config.train_mixtures + config.validation_mixtures + config.test_mixtures
    return count * _ARRAYS_PER_MIXTURE * config.image_size**2 * config.channels * _FLOAT32_BYTES


def _mask_net_weights(channels, width):
    """Convolution weights of models.build_mask_net: channels C, w, 2w, 4w, 8w and back."""
    widths = [channels] + [width * 2**i for i in range(_MASK_DOWN_STEPS)]
    return 2 * _KERNEL_TAPS * sum(a * b for a, b in zip(widths, widths[1:]))


def _discriminator_weights(image_size, channels, width):
    """Convolution weights of models.build_discriminator: C, d, 2d, ... to 4x4, then 1."""
    layers = int(math.log2(image_size // _DISC_LAST_SIDE))
    widths = [channels] + [width * 2**i for i in range(layers)] + [1]
    return _KERNEL_TAPS * sum(a * b for a, b in zip(widths, widths[1:]))


def _mask_net_activations(image_size, width):
    """Values one image leaves in the mask net's hidden convolution outputs (down and up)."""
    down = sum((image_size // 2 ** (i + 1)) ** 2 * width * 2**i for i in range(_MASK_DOWN_STEPS))
    # The way up repeats every down output's shape but the bottleneck's.
    bottleneck = (image_size // 2**_MASK_DOWN_STEPS) ** 2 * width * 2 ** (_MASK_DOWN_STEPS - 1)
    return 2 * down - bottleneck


def training_bytes(config):
    """Bytes one training step cannot do without: both nets' weights with their gradients and
    Adam moments, and the mask net's activations for the step's 2 * batch_pairs mixtures (kept
    for the backward pass; 16-bit under mixed precision)."""
    weights = _mask_net_weights(config.channels, config.mask_width) + _discriminator_weights(
        config.image_size, config.channels, config.disc_width
    )
    activation_bytes = 2 if config.mixed_precision.startswith("mixed") else _FLOAT32_BYTES
    activations = (
        2 * config.batch_pairs * _mask_net_activations(config.image_size, config.mask_width)
    )
    return weights * _COPIES_PER_WEIGHT * _FLOAT32_BYTES + activations * activation_bytes


def _gigabytes(count):
    return f"{count / 1e9:.3g} GB"


def check(needed, what, fix, available=None):
    """Raises a one-line UserError if `needed` bytes exceed the available memory.

    Args:
      needed: bytes, a lower bound of what `what` needs.
      what: the settings responsible, e.g. "--train_mixtures=10 ...".
      fix: what to lower.
      available: bytes free; None reads `available_bytes()` (and checks nothing where that is
        unknown).
    """
    available = available_bytes() if available is None else available
    if available is not None and needed > available:
        raise UserError(
            f"not enough memory for {what}: they need at least {_gigabytes(needed)} "
            f"but {_gigabytes(available)} are available: {fix}"
        )


def mixture_count_flags(config):
    """`config`'s mixture counts as the flags that set them, for messages that name the fix."""
    return " ".join(
        f"--{split}_mixtures={getattr(config, f'{split}_mixtures')}"
        for split in ("train", "validation", "test")
    )


def check_training(config, available=None):
    """`check` for a whole training run of `config`: its mixtures and one training step."""
    counts = mixture_count_flags(config)
    check(
        mixture_bytes(config) + training_bytes(config),
        f"{counts} --batch_pairs={config.batch_pairs} --mask_width={config.mask_width} "
        f"--disc_width={config.disc_width} at --image_size={config.image_size} "
        f"--channels={config.channels}",
        "lower them",
        available,
    )
