"""Tiny synthetic sources and configs shared by the tests and their helper processes."""

import numpy as np

from aur_tf.config import Config
from aur_tf.data.mixtures import MixtureDataset, mix_split


def color_strokes(count, channel, rng, image_size=32):
    """`[count, S, S, 3]` images of two bright bars each, all in one colour channel.

    Two sources drawn in different channels are the easy golden case: the true separation is a
    per-channel mask that an unsupervised run finds within a few hundred steps.
    """
    images = np.zeros((count, image_size, image_size, 3), np.float32)
    for image in images:
        for _ in range(2):
            row = rng.integers(2, image_size - 4)
            start = rng.integers(0, image_size // 2)
            image[row : row + 2, start : start + rng.integers(12, image_size // 2 + 1), channel] = (
                1.0
            )
    return images


def stroke_dataset(train_count=256, held_out_count=64, seed=0):
    """A `MixtureDataset` of red bars (source a) mixed with green bars (source b), 32x32x3, with
    `held_out_count` validation and test mixtures each.

    The test images are drawn last, so train and validation are those of the two-split dataset
    this replaced, and tests calibrated on it kept their data.
    """
    rng = np.random.default_rng(seed)
    pools = {
        name: color_strokes(train_count + held_out_count, channel, rng)
        for name, channel in (("a", 0), ("b", 1))
    }
    train = mix_split(pools["a"][:train_count], pools["b"][:train_count], train_count, rng)
    validation = mix_split(pools["a"][train_count:], pools["b"][train_count:], held_out_count, rng)
    test_pools = [color_strokes(held_out_count, channel, rng) for channel in (0, 1)]
    return MixtureDataset(
        train=train, validation=validation, test=mix_split(*test_pools, held_out_count, rng)
    )


def tiny_config(workdir, **overrides):
    """A Config for `stroke_dataset()` with narrow nets and short schedules."""
    settings = dict(
        workdir=str(workdir),
        channels=3,
        train_mixtures=256,
        validation_mixtures=64,
        test_mixtures=64,
        mask_width=4,
        disc_width=4,
        batch_pairs=8,
        # DC-GAN's beta1: the tests' short schedules were measured with it.
        adam_beta1=0.5,
        train_steps=6,
        eval_every=3,
        checkpoint_every=3,
        log_every=3,
        cache_dir=str(workdir) + "_cache",
    )
    settings.update(overrides)
    return Config(**settings)
