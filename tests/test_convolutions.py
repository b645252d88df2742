"""The phase-computed 4x4 stride-2 convolutions: the same values and gradients as TensorFlow's."""

import numpy as np
import pytest
import tensorflow as tf

from aur_tf import convolutions, machine, models

SHAPES = [(2, 2, 1, 3), (4, 6, 5, 8), (8, 4, 16, 1), (2, 2, 3, 512)]  # height, width, in, out


def _values_and_gradients(function, images, kernel):
    """f(images, kernel) and the gradients of a non-linear loss of it w.r.t. both."""
    with tf.GradientTape() as tape:
        tape.watch([images, kernel])
        outputs = function(images, kernel)
        loss = tf.reduce_sum(tf.sin(outputs) * outputs)
    return [outputs, *tape.gradient(loss, [images, kernel])]


def _assert_close(actual, expected):
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        scale = float(tf.reduce_max(tf.abs(e)))
        np.testing.assert_allclose(a.numpy() / scale, e.numpy() / scale, atol=1e-5)


@pytest.mark.parametrize("height, width, channels_in, channels_out", SHAPES)
def test_strided_conv_equals_tensorflows_conv2d(height, width, channels_in, channels_out):
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(3, height, width, channels_in)), tf.float32)
    kernel = tf.constant(rng.normal(size=(4, 4, channels_in, channels_out)), tf.float32)
    _assert_close(
        _values_and_gradients(convolutions.strided_conv, images, kernel),
        _values_and_gradients(lambda x, k: tf.nn.conv2d(x, k, 2, "SAME"), images, kernel),
    )


@pytest.mark.parametrize("height, width, channels_in, channels_out", SHAPES)
def test_transposed_conv_equals_tensorflows_conv2d_transpose(
    height, width, channels_in, channels_out
):
    rng = np.random.default_rng(1)
    images = tf.constant(rng.normal(size=(3, height, width, channels_in)), tf.float32)
    kernel = tf.constant(rng.normal(size=(4, 4, channels_out, channels_in)), tf.float32)

    def stock(x, k):
        return tf.nn.conv2d_transpose(x, k, [3, 2 * height, 2 * width, channels_out], 2, "SAME")

    _assert_close(
        _values_and_gradients(convolutions.transposed_conv, images, kernel),
        _values_and_gradients(stock, images, kernel),
    )


@pytest.mark.parametrize("layer", [convolutions.PhaseConv2D, convolutions.PhaseConv2DTranspose])
@pytest.mark.parametrize(
    "settings",
    [
        {"kernel_size": 3},
        {"strides": 1},
        {"padding": "valid"},
        {"use_bias": True},
        {"activation": "relu"},
    ],
)
def test_phase_layers_refuse_other_convolutions(layer, settings):
    arguments = {"kernel_size": 4, "strides": 2, "padding": "same", "use_bias": False, **settings}
    with pytest.raises(ValueError, match="4x4 stride-2"):
        layer(8, **arguments)


@pytest.mark.parametrize("build", [models.build_mask_net, models.build_discriminator])
@pytest.mark.parametrize("image_size, channels", [(32, 1), (64, 3)])
def test_nets_by_phases_share_weights_and_results_with_tensorflows_layers(
    build, image_size, channels, tmp_path
):
    by_phases = build(image_size, channels, width=4, phase_convolutions=True)
    stock = build(image_size, channels, width=4)
    assert any(
        isinstance(layer, (convolutions.PhaseConv2D, convolutions.PhaseConv2DTranspose))
        for layer in by_phases.layers
    )
    # A checkpoint of the net trained by phases restores into TensorFlow's layers, as export does.
    checkpoint = tf.train.Checkpoint(net=by_phases)
    path = checkpoint.write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(net=stock).read(path).assert_existing_objects_matched()
    images = tf.constant(
        np.random.default_rng(2).random((4, image_size, image_size, channels)), tf.float32
    )
    results = []
    for net in (by_phases, stock):
        with tf.GradientTape() as tape:
            outputs = net(images, training=True)
            loss = tf.reduce_sum(tf.square(outputs))
        results.append([outputs, *tape.gradient(loss, net.trainable_variables)])
    _assert_close(*results)


@pytest.mark.parametrize(
    "gpus, flags, native_fast",
    [
        ([], machine.AVX512_CORE_FLAGS | {"avx2"}, True),
        ([], frozenset({"avx2", "avx512f"}), False),
        ([], frozenset(), False),  # flags unreadable
        (["GPU:0"], frozenset(), True),
    ],
)
def test_native_kernels_count_as_fast_with_a_gpu_or_an_avx512_core_cpu(
    monkeypatch, gpus, flags, native_fast
):
    monkeypatch.setattr(machine, "cpu_flags", lambda: flags)
    monkeypatch.setattr(
        tf.config,
        "list_logical_devices",
        lambda device_type=None: gpus if device_type == "GPU" else [],
    )
    assert convolutions.native_kernels_are_fast() is native_fast
