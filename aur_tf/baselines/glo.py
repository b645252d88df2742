"""GLO baseline: two generators and one learned latent code per mixture (Bojanowski et al. 2018).

Generative Latent Optimization fits a generator and a free latent code per training image by
reconstruction alone, the codes kept on the unit sphere. As a separation baseline (the paper's
"decompositional" comparison, after Halperin et al. 2018) two generators G_a and G_b share each
mixture's code z_i and are trained so that (G_a(z_i) + G_b(z_i)) / 2 reconstructs y_i. Nothing
tells the generators which digit goes where; they split each mixture however reconstruction
allows. Test mixtures get codes of their own, fitted with both generators frozen, and the
estimates are x_hat = G_a(z), b_hat = G_b(z), already on the clean scale.
"""

import dataclasses
import logging
import math

import keras
import numpy as np
import tensorflow as tf

from aur_tf.config import setting
from aur_tf.errors import UserError

log = logging.getLogger("aur_tf")

_KERNEL = 4
_BASE_SIZE = 4  # the generators start from a 4x4 feature map, as DC-GAN does
# Running statistics that follow training closely (as in models.py), so the frozen generators
# that fit test codes in inference mode are the ones the training codes were fitted with.
_BN_MOMENTUM = 0.9


@dataclasses.dataclass(frozen=True)
class GloSettings:
    """Settings of the GLO baseline."""

    glo_latent_dim: int = setting(
        32, "GLO: dimension of each mixture's latent code (on the unit sphere)."
    )
    glo_width: int = setting(
        32,
        "GLO: channels of each generator's last hidden layer; doubling toward the 4x4 input layer.",
    )
    glo_batch_size: int = setting(
        128, "GLO: mixtures per step, in training and in test-time code fitting."
    )
    glo_train_steps: int = setting(4000, "GLO: steps fitting generators and training codes.")
    glo_test_steps: int = setting(
        1000, "GLO: steps fitting the test mixtures' codes with the generators frozen."
    )
    glo_learning_rate: float = setting(1e-3, "GLO: Adam learning rate of the generators.")
    glo_code_learning_rate: float = setting(3e-2, "GLO: Adam learning rate of the latent codes.")

    def __post_init__(self):
        for name in (
            "glo_latent_dim",
            "glo_width",
            "glo_batch_size",
            "glo_train_steps",
            "glo_test_steps",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"--{name}={getattr(self, name)} must be a positive integer")
        for name in ("glo_learning_rate", "glo_code_learning_rate"):
            if not getattr(self, name) > 0:
                raise UserError(f"--{name}={getattr(self, name)} must be > 0")


def build_generator(latent_dim, image_size, channels, width, name):
    """A DC-GAN decoder: latent code -> image.

    Args:
      latent_dim: length of the code.
      image_size: output height and width, a power of two >= 8 (32 or 64 here).
      channels: output channels.
      width: channels of the last hidden layer; each layer toward the input has twice as many.
      name: model name.

    Returns:
      A `keras.Model` mapping `[batch, latent_dim]` codes to `[batch, image_size, image_size,
      channels]` images in (0, 1) (sigmoid), the clean-source scale.
    """
    up_steps = int(math.log2(image_size // _BASE_SIZE))
    widths = [width * 2**i for i in reversed(range(up_steps))]
    init = keras.initializers.RandomNormal(stddev=0.02)
    layers = [
        keras.Input((latent_dim,)),
        keras.layers.Dense(
            _BASE_SIZE * _BASE_SIZE * widths[0], use_bias=False, kernel_initializer=init
        ),
        keras.layers.Reshape((_BASE_SIZE, _BASE_SIZE, widths[0])),
        keras.layers.BatchNormalization(momentum=_BN_MOMENTUM),
        keras.layers.ReLU(),
    ]
    for filters in widths[1:]:
        layers += [
            keras.layers.Conv2DTranspose(
                filters, _KERNEL, strides=2, padding="same", use_bias=False, kernel_initializer=init
            ),
            keras.layers.BatchNormalization(momentum=_BN_MOMENTUM),
            keras.layers.ReLU(),
        ]
    layers += [
        keras.layers.Conv2DTranspose(
            channels, _KERNEL, strides=2, padding="same", kernel_initializer=init
        ),
        keras.layers.Activation("sigmoid"),
    ]
    return keras.Sequential(layers, name=name)


def _unit_codes(count, latent_dim, rng):
    """`[count, latent_dim]` float32 codes drawn uniformly on the unit sphere."""
    codes = rng.standard_normal((count, latent_dim)).astype(np.float32)
    return codes / np.linalg.norm(codes, axis=1, keepdims=True)


def _batches(count, batch_size, steps, rng):
    """`[steps, batch_size]` indices: whole shuffled passes over `count` items, back to back, so
    every item is visited equally often whatever `count` is."""
    passes = -(-steps * batch_size // count)
    order = np.concatenate([rng.permutation(count) for _ in range(passes)])
    return order[: steps * batch_size].reshape(steps, batch_size)


class Glo:
    """The two generators; `fit` trains them with the training codes, `separate` uses them."""

    def __init__(self, settings, image_size, channels):
        self.settings = settings
        self.generators = [
            build_generator(
                settings.glo_latent_dim,
                image_size,
                channels,
                settings.glo_width,
                f"generator_{name}",
            )
            for name in ("a", "b")
        ]

    def _fit_codes(self, mixtures, steps, rng, train_generators, log_every):
        """Fits fresh unit codes to `mixtures` (and the generators if `train_generators`).

        Args:
          mixtures: `[N, H, W, C]` float32 in [0, 1].
          steps: optimisation steps of `glo_batch_size` mixtures each.
          rng: numpy Generator for the initial codes and the batch order.
          train_generators: update the generators too (training) or keep them frozen (test).
          log_every: steps between progress lines.

        Returns:
          (codes, losses): `[N, latent_dim]` unit codes and the mean L1 reconstruction loss
          over each window of `log_every` steps.
        """
        settings = self.settings
        codes = keras.Variable(
            _unit_codes(len(mixtures), settings.glo_latent_dim, rng), name="codes"
        )
        targets = tf.constant(mixtures)
        code_optimizer = keras.optimizers.Adam(settings.glo_code_learning_rate)
        generator_variables = (
            [v for g in self.generators for v in g.trainable_variables] if train_generators else []
        )
        generator_optimizer = (
            keras.optimizers.Adam(settings.glo_learning_rate, beta_1=0.5)
            if train_generators
            else None
        )

        @tf.function
        def step(indices):
            with tf.GradientTape() as tape:
                z = tf.gather(codes, indices)
                a, b = (g(z, training=train_generators) for g in self.generators)
                # L1 (GLO's own loss is an L1 over a Laplacian pyramid): sharper strokes than L2.
                loss = tf.reduce_mean(tf.abs((a + b) / 2.0 - tf.gather(targets, indices)))
            gradients = tape.gradient(loss, [codes] + generator_variables)
            code_optimizer.apply(gradients[:1], [codes])
            if generator_variables:
                generator_optimizer.apply(gradients[1:], generator_variables)
            # GLO's projection back onto the unit sphere after every update.
            codes.assign(tf.math.l2_normalize(codes, axis=1))
            return loss

        losses, window = [], []
        for number, indices in enumerate(
            _batches(len(mixtures), settings.glo_batch_size, steps, rng), start=1
        ):
            window.append(float(step(indices)))
            if number % log_every == 0 or number == steps:
                losses.append(float(np.mean(window)))
                window = []
                log.info(
                    "glo %s step %d/%d | L1 %.4f",
                    "training" if train_generators else "test codes",
                    number,
                    steps,
                    losses[-1],
                )
        return np.asarray(codes), losses

    def fit(self, mixtures, seed, log_every=100):
        """Trains both generators and the training mixtures' codes.

        Args:
          mixtures: `[N, H, W, C]` float32 training mixtures in [0, 1]; nothing else is used.
          seed: fixes the initial codes and batch order (weights follow Keras' global seed).
          log_every: steps between progress lines.

        Returns:
          Mean L1 reconstruction loss of each window of `log_every` training steps.
        """
        return self._fit_codes(
            mixtures, self.settings.glo_train_steps, np.random.default_rng(seed), True, log_every
        )[1]

    def separate(self, mixtures, seed, log_every=100, batch_size=500):
        """Fits codes for new mixtures with frozen generators and returns both generators' images.

        Args:
          mixtures: `[N, H, W, C]` float32 in [0, 1].
          seed: fixes the initial codes and batch order.
          log_every: steps between progress lines.
          batch_size: codes decoded at once for the returned estimates.

        Returns:
          (estimates_a, estimates_b, losses): `[N, H, W, C]` float32 G_a(z) and G_b(z) in (0, 1),
          and the L1 reconstruction loss of each window of code-fitting steps.
        """
        codes, losses = self._fit_codes(
            mixtures, self.settings.glo_test_steps, np.random.default_rng(seed), False, log_every
        )
        estimates = [
            np.concatenate(
                [
                    np.asarray(g(codes[i : i + batch_size], training=False))
                    for i in range(0, len(codes), batch_size)
                ]
            )
            for g in self.generators
        ]
        return estimates[0], estimates[1], losses
