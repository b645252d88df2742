"""The mask net M (DiscoGAN generator) and the discriminator D (DC-GAN), Sec. 4 of the paper.

Both use 4x4 stride-2 convolutions with 'same' padding (PyTorch's k=4, s=2, p=1) and the DC-GAN
initialisation N(0, 0.02). Under a mixed precision policy the hidden layers compute in float16 or
bfloat16 while the mask's sigmoid and the discriminator's score stay float32, so the losses and the
masks written at export never see reduced precision.
"""

import math

import keras

from aur_tf.config import CHANNEL_COUNTS, DISC_NORMALIZATIONS, IMAGE_SIZES
from aur_tf.convolutions import KERNEL_SIZE, PhaseConv2D, PhaseConv2DTranspose

_DOWN_STEPS = 4  # DiscoGAN: 32x32 -> 2x2 and 64x64 -> 4x4 bottleneck.
_LEAK = 0.2
# PyTorch-style running averages (keras momentum 0.9 == torch momentum 0.1) so the inference-mode
# statistics used at evaluation follow the quickly moving GAN features closely.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _check_shape(image_size, channels):
    if image_size not in IMAGE_SIZES or channels not in CHANNEL_COUNTS:
        raise ValueError(
            f"image_size must be one of {IMAGE_SIZES} and channels one of "
            f"{CHANNEL_COUNTS}, got {image_size} and {channels}"
        )


def _conv(filters, dtype, name, strides=2, padding="same", by_phases=False):
    layer = PhaseConv2D if by_phases else keras.layers.Conv2D
    return layer(
        filters,
        KERNEL_SIZE,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
        dtype=dtype,
        name=name,
    )


def _conv_transpose(filters, dtype, name, by_phases=False):
    layer = PhaseConv2DTranspose if by_phases else keras.layers.Conv2DTranspose
    return layer(
        filters,
        KERNEL_SIZE,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
        dtype=dtype,
        name=name,
    )


def _batch_norm(dtype, name, synchronized):
    return keras.layers.BatchNormalization(
        momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON,
        gamma_initializer=keras.initializers.RandomNormal(mean=1.0, stddev=0.02),
        dtype=dtype,
        synchronized=synchronized,
        name=name,
    )


def build_mask_net(
    image_size=32,
    channels=1,
    width=64,
    dtype="float32",
    synchronized_bn=False,
    phase_convolutions=False,
):
    """DiscoGAN encoder-decoder that predicts a per-pixel mask.

    `width` channels sit at the layer before last; each layer toward the bottleneck has twice as
    many (64, 128, 256, 512 for the paper's width 64).

    Args:
      image_size: 32 or 64.
      channels: 1 (grayscale) or 3 (RGB).
      width: channels of the outermost hidden layers.
      dtype: a Keras dtype policy name, e.g. "float32" or "mixed_float16".
      synchronized_bn: BatchNorm statistics over the global batch of every replica rather than
        each replica's share (for multi-replica training; one device does not need it).
      phase_convolutions: compute the transposed convolutions (the forward passes up, the input
        gradients down) by phases, `aur_tf.convolutions`: several times faster on CPUs, with the
        same weights and results. Export builds the net without, for standard ONNX layers.

    Returns:
      A `keras.Model` mapping mixtures `[batch, image_size, image_size, channels]` in [0, 1] to
      masks M(y) of the same shape in (0, 1), float32.
    """
    _check_shape(image_size, channels)
    widths = [width * 2**i for i in range(_DOWN_STEPS)]
    layers = [keras.Input((image_size, image_size, channels), name="mixture")]
    for i, filters in enumerate(widths):
        layers.append(_conv(filters, dtype, f"down{i}_conv", by_phases=phase_convolutions))
        if i > 0:  # DiscoGAN leaves the first layer unnormalised, as DC-GAN does.
            layers.append(_batch_norm(dtype, f"down{i}_bn", synchronized_bn))
        layers.append(keras.layers.LeakyReLU(_LEAK, dtype=dtype, name=f"down{i}_lrelu"))
    for i, filters in enumerate(reversed(widths[:-1])):
        layers.append(_conv_transpose(filters, dtype, f"up{i}_convt", by_phases=phase_convolutions))
        layers.append(_batch_norm(dtype, f"up{i}_bn", synchronized_bn))
        layers.append(keras.layers.ReLU(dtype=dtype, name=f"up{i}_relu"))
    layers.append(
        _conv_transpose(channels, dtype, f"up{_DOWN_STEPS - 1}_convt", by_phases=phase_convolutions)
    )
    layers.append(keras.layers.Activation("sigmoid", dtype="float32", name="mask"))
    return keras.Sequential(layers, name="mask_net")


def build_discriminator(
    image_size=32,
    channels=1,
    width=64,
    dtype="float32",
    synchronized_bn=False,
    phase_convolutions=False,
    normalization="batch",
):
    """DC-GAN discriminator without the final sigmoid (LS-GAN scores, Eq. 4-5).

    Strided convolutions halve the image down to 4x4 (width, 2 width, ... channels); a final
    4x4 'valid' convolution gives one score per image.

    With `normalization="spectral"` every convolution's kernel is divided by its largest singular
    value (SN-GAN, Miyato et al., 2018: one power iteration per training call, which rewrites the
    kernel in place) and there is no BatchNorm, which would undo that scale.

    Args:
      image_size: 32 or 64.
      channels: 1 or 3.
      width: channels of the first layer.
      dtype: a Keras dtype policy name.
      synchronized_bn: as for `build_mask_net`.
      phase_convolutions: as for `build_mask_net` (here: the strided layers' input gradients).
      normalization: "batch" (DC-GAN's BatchNorm after every convolution but the first and the
        last) or "spectral".

    Returns:
      A `keras.Model` mapping `[batch, image_size, image_size, channels]` in [0, 1] to raw scores
      `[batch, 1]`, float32.
    """
    _check_shape(image_size, channels)
    if normalization not in DISC_NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {DISC_NORMALIZATIONS}, got {normalization}")
    spectral = normalization == "spectral"

    def normalized(conv):
        if not spectral:
            return conv
        # The power iteration runs in float32 whatever the policy: in float16 its vectors
        # underflow (a NaN score) and the kernel it writes back would be rounded to float16.
        return keras.layers.SpectralNormalization(conv, dtype="float32", name=f"{conv.name}_sn")

    layers = [keras.Input((image_size, image_size, channels), name="image")]
    for i in range(int(math.log2(image_size // KERNEL_SIZE))):
        conv = _conv(width * 2**i, dtype, f"down{i}_conv", by_phases=phase_convolutions)
        layers.append(normalized(conv))
        if i > 0 and not spectral:
            layers.append(_batch_norm(dtype, f"down{i}_bn", synchronized_bn))
        layers.append(keras.layers.LeakyReLU(_LEAK, dtype=dtype, name=f"down{i}_lrelu"))
    layers.append(normalized(_conv(1, dtype, "score_conv", strides=1, padding="valid")))
    layers.append(keras.layers.Flatten(dtype=dtype, name="flatten"))
    layers.append(keras.layers.Activation("linear", dtype="float32", name="score"))
    return keras.Sequential(layers, name="discriminator")
