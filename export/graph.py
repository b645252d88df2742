"""The mask net as exported to ONNX: its bottleneck convolutions as MatMuls over the batch.

onnxruntime's CPU Conv and ConvTranspose multiply one image at a time: each call is a GEMM whose
columns are that image's output pixels. At the bottleneck (2x2 pixels for 32x32 images, 4x4 for
64x64) that GEMM is 4 or 16 columns wide and runs at a fraction of the machine's speed, and
these two layers (the last strided convolution and the first transposed one) take most of a
batch's time. Here both are computed as explicit im2col (one slice per kernel tap, concatenated
along the channels) + MatMul, with the batch inside the GEMM's rows. The multiply-adds are the
convolutions' own (no zero blocks are added) and the weights the Keras layers', reshaped. Larger
layers are left to onnxruntime's Conv and ConvTranspose, which beat the explicit im2col there.
Measurements of this and the other graphs tried are in docs/deployment.md.

For int8 the other transposed convolutions are written as convolutions too
(`SubpixelConv2DTranspose`: one 3x3 Conv giving the four phases as channel blocks, then
DepthToSpace), because onnxruntime's CPU provider runs Conv in int8 but ConvTranspose only in
float32 between dequantisation and requantisation. In float32 that form is slower (it does 9/4
of the multiply-adds, the zero taps of each phase included).

The 4x4 stride-2 'same' convolution of an H x W input (H, W even) sees, at output pixel (i, j),
the padded input's rows 2i..2i+3 and columns 2j..2j+3. The transposed one is computed by phases
(see `aur_tf.convolutions`): output pixel (2m + a, 2l + b) sees padded input rows m + a + {0, 1}
and columns l + b + {0, 1} through the kernel taps 3 - a - 2s, 3 - b - 2t; the four phases are
interleaved by DepthToSpace.
"""

import keras
import numpy as np
import tensorflow as tf

from aur_tf.convolutions import KERNEL_SIZE, pad_one_pixel, phase_tap


def _constant_weight(layer, name, value):
    return layer.add_weight(
        name=name,
        shape=value.shape,
        trainable=False,
        initializer=keras.initializers.Constant(value),
        dtype=value.dtype,
    )


class MatMulConv2D(keras.layers.Layer):
    """A 4x4 stride-2 'same' Conv2D (no bias) as one MatMul of im2col patches.

    Takes `[batch, H, W, in]`, gives `[batch, H/2, W/2, out]`; the GEMM has batch * H/2 * W/2 rows.
    """

    def __init__(self, kernel, **kwargs):
        """`kernel`: `[4, 4, in, out]`, a Keras Conv2D's."""
        super().__init__(**kwargs)
        kernel = np.asarray(kernel)
        self.matrix = _constant_weight(self, "matrix", kernel.reshape(-1, kernel.shape[3]))

    def call(self, images):
        _, height, width, _ = images.shape
        padded = pad_one_pixel(images)
        # Tap (u, v) of every output pixel: one strided slice; their concatenation along the
        # channels is the im2col matrix, in the kernel's [u, v, in] order.
        patches = tf.concat(
            [
                padded[:, u : u + height : 2, v : v + width : 2]
                for u in range(KERNEL_SIZE)
                for v in range(KERNEL_SIZE)
            ],
            axis=-1,
        )
        return patches @ self.matrix


class MatMulConv2DTranspose(keras.layers.Layer):
    """A 4x4 stride-2 'same' Conv2DTranspose (no bias) as one MatMul per phase + DepthToSpace.

    Takes `[batch, H, W, in]`, gives `[batch, 2H, 2W, out]`; each GEMM has batch * H * W rows.
    """

    def __init__(self, kernel, **kwargs):
        """`kernel`: `[4, 4, out, in]`, a Keras Conv2DTranspose's."""
        super().__init__(**kwargs)
        kernel = np.asarray(kernel)
        self.matrices = [
            _constant_weight(
                self,
                f"phase{a}{b}",
                np.stack(
                    [
                        np.stack([phase_tap(kernel, a, b, s, t).T for t in range(2)])
                        for s in range(2)
                    ]
                ).reshape(-1, kernel.shape[2]),
            )
            for a in range(2)
            for b in range(2)
        ]

    def call(self, images):
        _, height, width, _ = images.shape
        padded = pad_one_pixel(images)
        phases = []
        for a in range(2):
            for b in range(2):
                patches = tf.concat(
                    [
                        padded[:, a + s : a + s + height, b + t : b + t + width]
                        for s in range(2)
                        for t in range(2)
                    ],
                    axis=-1,
                )
                phases.append(patches @ self.matrices[2 * a + b])
        # DepthToSpace puts channel block 2a + b at output pixel (2m + a, 2n + b).
        return tf.nn.depth_to_space(tf.concat(phases, axis=-1), 2)


class SubpixelConv2DTranspose(keras.layers.Layer):
    """A 4x4 stride-2 'same' Conv2DTranspose (no bias) as a 3x3 Conv2D + DepthToSpace.

    Takes `[batch, H, W, in]`, gives `[batch, 2H, 2W, out]`. Phase (a, b) reads input rows
    m + a - 1 + {0, 1}, the 3x3 window's rows a + {0, 1}; the kernel is zero elsewhere.
    """

    def __init__(self, kernel, **kwargs):
        """`kernel`: `[4, 4, out, in]`, a Keras Conv2DTranspose's."""
        super().__init__(**kwargs)
        kernel = np.asarray(kernel)
        _, _, out, depth = kernel.shape
        window = np.zeros((3, 3, depth, 4, out), kernel.dtype)
        for a in range(2):
            for b in range(2):
                for s in range(2):
                    for t in range(2):
                        window[a + s, b + t, :, 2 * a + b] = phase_tap(kernel, a, b, s, t).T
        self.window = _constant_weight(self, "window", window.reshape(3, 3, depth, 4 * out))

    def call(self, images):
        return tf.nn.depth_to_space(tf.nn.conv2d(images, self.window, 1, "SAME"), 2)


def export_net(mask_net, for_int8=False):
    """`mask_net` with its bottleneck convolutions as MatMuls (see the module docstring).

    Args:
      mask_net: a float32 `models.build_mask_net` net (stock Keras layers).
      for_int8: also write the other transposed convolutions as `SubpixelConv2DTranspose`, the
        form onnxruntime quantises.

    Returns:
      A float32 Keras model computing the same masks `[batch, H, W, C] -> [batch, H, W, C]` in
      (0, 1) from the same weights (up to float32 rounding: the sums run in another order).
    """
    strided = [
        layer
        for layer in mask_net.layers
        if isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, keras.layers.Conv2DTranspose)
    ]
    transposed = [
        layer for layer in mask_net.layers if isinstance(layer, keras.layers.Conv2DTranspose)
    ]
    replaced = {strided[-1].name: MatMulConv2D, transposed[0].name: MatMulConv2DTranspose}
    outputs = inputs = keras.Input(mask_net.input_shape[1:], name="mixture")
    for layer in mask_net.layers:
        if layer.name in replaced:
            layer = replaced[layer.name](layer.kernel, name=f"{layer.name}_matmul")
        elif for_int8 and isinstance(layer, keras.layers.Conv2DTranspose):
            layer = SubpixelConv2DTranspose(layer.kernel, name=f"{layer.name}_subpixel")
        outputs = layer(outputs)
    return keras.Model(inputs, outputs, name="mask_net_export")
