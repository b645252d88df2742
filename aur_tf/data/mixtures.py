"""Clean sources -> equal-weight mixtures y = (x + b) / 2, as in Sec. 5 of the paper.

Each split draws source-a and source-b images without replacement from that split's pool (a fresh
random permutation, seeded), so no clean image repeats while the pool is large enough. When a pool
is smaller than the number of mixtures asked for, the permutation is cycled: every image is used
once before any is used twice, and a repeated image meets a different partner. On MNIST this
happens for digits 5-9, which number 24 462 in the training split against 25 000 mixtures, so 538
of those digits appear twice.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from aur_tf import memory
from aur_tf.data.sources import SPLITS, load_source
from aur_tf.errors import UserError
from aur_tf.safe_io import printable


@dataclasses.dataclass(frozen=True)
class MixtureSplit:
    """Mixtures and, for evaluation only, the clean images they were made of.

    Attributes:
      mixtures: `[N, H, W, C]` float32 in [0, 1], (sources_a + sources_b) / 2.
      sources_a: `[N, H, W, C]` float32 in [0, 1].
      sources_b: `[N, H, W, C]` float32 in [0, 1].
      labels_a, labels_b: `[N]` int64 labels of sources_a and sources_b when their source has a
        labels filter (`SourceImages`), else None.
    """

    mixtures: np.ndarray
    sources_a: np.ndarray
    sources_b: np.ndarray
    labels_a: np.ndarray | None = None
    labels_b: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class MixtureDataset:
    """A run's mixtures: `train` to learn from, `validation` for every evaluation and choice made
    during or about training, `test` scored once on the final (or selected) checkpoint."""

    train: MixtureSplit
    validation: MixtureSplit
    test: MixtureSplit


def fit_images(images, image_size, channels, invert, name):
    """Brings a source's images to the training shape.

    Smaller images are zero-padded around the centre (MNIST 28 -> 32, as in the paper); larger
    ones are resized with antialiasing (the paper rescales Shoes and Bags to 64). Inversion comes
    first so padding adds background, which is 0 after inversion too.

    Args:
      images: `[N, H, W, C]` float32 in [0, 1].
      image_size: target height and width.
      channels: required channel count; a mismatch is a user error, not silently converted.
      invert: replace each image I by 1 - I.
      name: the source's spec, for messages.

    Returns:
      `[N, image_size, image_size, channels]` float32 in [0, 1].
    """
    if images.shape[-1] != channels:
        raise UserError(
            f"source '{printable(name)}' has {images.shape[-1]} channel(s) but "
            f"--channels={channels}: set --channels={images.shape[-1]} or use a source with "
            f"{channels} channel(s)"
        )
    if invert:
        images = 1.0 - images
    height, width = images.shape[1:3]
    if height <= image_size and width <= image_size:
        top, left = (image_size - height) // 2, (image_size - width) // 2
        return np.pad(
            images,
            ((0, 0), (top, image_size - height - top), (left, image_size - width - left), (0, 0)),
        )
    resized = tf.image.resize(images, (image_size, image_size), antialias=True).numpy()
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def _draw_without_replacement(pool_size, count, rng):
    return np.resize(rng.permutation(pool_size), count)


def mix_split(images_a, images_b, count, rng, labels_a=None, labels_b=None):
    """Draws `count` (a, b) pairs and mixes them with equal weights.

    Args:
      images_a: `[Na, H, W, C]` float32 in [0, 1].
      images_b: `[Nb, H, W, C]` float32 in [0, 1].
      count: number of mixtures.
      rng: `np.random.Generator` that fixes which images are drawn (labels do not change the draw).
      labels_a, labels_b: `[Na]` and `[Nb]` labels of the images, or None; drawn along with them.
    """
    drawn_a = _draw_without_replacement(len(images_a), count, rng)
    drawn_b = _draw_without_replacement(len(images_b), count, rng)
    sources_a, sources_b = images_a[drawn_a], images_b[drawn_b]
    return MixtureSplit(
        (sources_a + sources_b) / 2.0,
        sources_a,
        sources_b,
        labels_a=None if labels_a is None else labels_a[drawn_a],
        labels_b=None if labels_b is None else labels_b[drawn_b],
    )


def make_mixture_dataset(source_a, source_b, config):
    """Train, validation and test mixtures from two loaded sources (`SourceImages`).

    Deterministic given `config.seed`: the same seed gives the same mixtures. The splits are
    drawn in the order train, validation, test from one generator, so the train and validation
    mixtures do not depend on `config.test_mixtures`.
    """
    prepared = {}
    for label, source in (("a", source_a), ("b", source_b)):
        for split in SPLITS:
            prepared[label, split] = fit_images(
                getattr(source, split),
                config.image_size,
                config.channels,
                config.invert,
                source.name,
            )
    rng = np.random.default_rng(config.seed)

    def split_mixtures(split, count):
        return mix_split(
            prepared["a", split],
            prepared["b", split],
            count,
            rng,
            labels_a=getattr(source_a, f"{split}_labels"),
            labels_b=getattr(source_b, f"{split}_labels"),
        )

    try:
        return MixtureDataset(
            **{
                split: split_mixtures(split, getattr(config, f"{split}_mixtures"))
                for split in SPLITS
            }
        )
    except MemoryError:
        shape = "x".join(str(n) for n in prepared["a", "train"].shape[1:])
        raise UserError(
            f"not enough memory for {memory.mixture_count_flags(config)} mixtures of {shape} "
            "(three float32 copies each): lower them"
        ) from None


def load_mixture_dataset(config):
    """Loads both sources named by `config.source_a` / `config.source_b` and mixes them.

    Raises:
      UserError: bad sources, or more mixtures than the free memory holds (checked before the
        sources are read).
    """
    if config.source_a == config.source_b:
        raise UserError(
            f"--source_a and --source_b are both '{printable(config.source_a)}': the "
            "two sources must differ (e.g. mnist?labels=0-4 and mnist?labels=5-9)"
        )
    memory.check(
        memory.mixture_bytes(config),
        f"{memory.mixture_count_flags(config)} of {config.image_size}x{config.image_size}x"
        f"{config.channels} (three float32 copies each)",
        "lower them",
    )
    return make_mixture_dataset(
        load_source(config.source_a, cache_dir=config.cache_dir),
        load_source(config.source_b, cache_dir=config.cache_dir),
        config,
    )
