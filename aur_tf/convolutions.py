"""The 4x4 stride-2 convolutions of both nets, computed with the TensorFlow kernels fast on CPUs.

Every pass of a convolution is one of three TensorFlow ops: Conv2D (the forward pass), the filter
gradient, and Conv2DBackpropInput, which is both a convolution's input gradient and a transposed
convolution's forward pass. On AVX2 CPUs TensorFlow's oneDNN Conv2DBackpropInput is many times
slower than a Conv2D of the same multiply-adds for small images with many channels, and at the
paper's widths it is more than half of a training step (docs/training-speed.md has the figures).
So each transposed convolution here is computed as four 2x2 stride-1 Conv2Ds, one
per output phase, interleaved (the sub-pixel identity: output pixel (2m + a, 2l + b) sees only
input pixels m + a - 1 + {0, 1} and l + b - 1 + {0, 1}, through the kernel taps 3 - a - 2s and
3 - b - 2t). The layers keep Keras's kernels, names and results (equal up to float rounding), so
checkpoints and exports are unchanged; export writes the stock Keras layers.

On CPUs with AVX-512 oneDNN runs the same Conv2DBackpropInput with its brgemm avx512_core kernel
at matmul speed, and there TensorFlow's own kernels make a whole training step faster than the
phases do; `native_kernels_are_fast` tells the two kinds of machine apart.
"""

import keras
import tensorflow as tf

from aur_tf import machine

KERNEL_SIZE = 4


def native_kernels_are_fast():
    """Whether TensorFlow's own transposed-convolution kernels beat the phases here.

    True with a visible GPU (cuDNN) or a CPU with AVX-512 (oneDNN's avx512_core kernels). False on
    other CPUs and where the CPU's flags cannot be read: a wrong guess there costs the phases a
    fraction of a step, the native kernels a multiple of one.
    """
    return bool(tf.config.list_logical_devices("GPU")) or machine.has_avx512_core(
        machine.cpu_flags()
    )


def pad_one_pixel(images):
    """`[batch, H, W, C]` -> `[batch, H + 2, W + 2, C]`, zero-padded: what every phase reads."""
    return tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])


def phase_tap(kernel, row_phase, column_phase, row, column):
    """The `[out, in]` tap of a `[4, 4, out, in]` transposed-convolution kernel through which
    output pixel (2m + row_phase, 2l + column_phase) sees the padded input pixel
    (m + row_phase + row, l + column_phase + column), `row` and `column` in {0, 1}."""
    return kernel[
        KERNEL_SIZE - 1 - row_phase - 2 * row, KERNEL_SIZE - 1 - column_phase - 2 * column
    ]


def _phase_kernel(kernel, row_phase, column_phase):
    """`[4, 4, out, in]` transposed-convolution kernel -> `[2, 2, in, out]` kernel of one phase."""
    taps = [[phase_tap(kernel, row_phase, column_phase, s, t) for t in range(2)] for s in range(2)]
    return tf.transpose(tf.stack([tf.stack(row) for row in taps]), [0, 1, 3, 2])


def _transposed_by_phases(images, kernel):
    """The 4x4 stride-2 'same' transposed convolution, as four stride-1 Conv2Ds.

    Args:
      images: `[batch, H, W, in]`, H and W even.
      kernel: `[4, 4, out, in]`, Keras's Conv2DTranspose layout.

    Returns:
      `[batch, 2H, 2W, out]`, what `tf.nn.conv2d_transpose(..., strides=2, padding="SAME")` gives.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = pad_one_pixel(images)
    phases = tf.stack(
        [
            tf.stack(
                [
                    tf.nn.conv2d(
                        padded[:, a : a + height + 1, b : b + width + 1],
                        _phase_kernel(kernel, a, b),
                        1,
                        "VALID",
                    )
                    for b in range(2)
                ]
            )
            for a in range(2)
        ]
    )  # [row phase, column phase, batch, H, W, out]
    interleaved = tf.transpose(phases, [2, 3, 0, 4, 1, 5])  # [batch, H, row phase, W, col, out]
    return tf.reshape(interleaved, [batch, 2 * height, 2 * width, kernel.shape[2]])


def _filter_gradient(inputs, kernel_shape, output_gradient):
    return tf.compat.v1.nn.conv2d_backprop_filter(
        inputs, kernel_shape, output_gradient, [1, 2, 2, 1], "SAME"
    )


@tf.custom_gradient
def strided_conv(images, kernel):
    """Conv2D, 4x4, stride 2, 'same': `[batch, H, W, in]` (H, W even) -> `[batch, H/2, W/2, out]`.

    `kernel` is `[4, 4, in, out]`. The input gradient is a transposed convolution by phases.
    """

    def gradient(output_gradient):
        return (
            _transposed_by_phases(output_gradient, kernel),
            _filter_gradient(images, tf.shape(kernel), output_gradient),
        )

    return tf.nn.conv2d(images, kernel, 2, "SAME"), gradient


@tf.custom_gradient
def transposed_conv(images, kernel):
    """Conv2DTranspose, 4x4, stride 2, 'same': `[batch, H, W, in]` -> `[batch, 2H, 2W, out]`.

    `kernel` is `[4, 4, out, in]`. The forward pass is by phases; the input gradient is a Conv2D.
    """

    def gradient(output_gradient):
        return (
            tf.nn.conv2d(output_gradient, kernel, 2, "SAME"),
            _filter_gradient(output_gradient, tf.shape(kernel), images),
        )

    return _transposed_by_phases(images, kernel), gradient


class _CheckedLayout:
    """Refuses any layer but the one these ops compute: 4x4, stride 2, 'same', no bias."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if (
            self.kernel_size != (KERNEL_SIZE, KERNEL_SIZE)
            or self.strides != (2, 2)
            or self.padding != "same"
            or self.use_bias
            or self.activation is not keras.activations.linear
            or self.dilation_rate != (1, 1)
            or self.data_format != "channels_last"
            or getattr(self, "output_padding", None) is not None
        ):
            raise ValueError(
                f"{type(self).__name__} computes only 4x4 stride-2 'same' "
                "convolutions without bias or activation, channels last"
            )


class PhaseConv2D(_CheckedLayout, keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose input gradient is computed by phases (`strided_conv`)."""

    def convolution_op(self, inputs, kernel):
        # Read here, so the custom gradient sees a tensor input rather than a variable it uses.
        return strided_conv(inputs, tf.convert_to_tensor(kernel))


class PhaseConv2DTranspose(_CheckedLayout, keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` whose forward pass is computed by phases."""

    def call(self, inputs):
        return transposed_conv(inputs, tf.convert_to_tensor(self.kernel))
