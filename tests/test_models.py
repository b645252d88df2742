import keras
import numpy as np
import pytest

from aur_tf import models


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_mask_net_maps_mixtures_to_masks_of_the_same_shape(image_size, channels):
    net = models.build_mask_net(image_size, channels, width=4)
    mixtures = np.random.default_rng(0).random((3, image_size, image_size, channels), np.float32)
    masks = np.asarray(net(mixtures, training=False))
    assert masks.shape == mixtures.shape
    assert masks.dtype == np.float32
    assert masks.min() > 0.0 and masks.max() < 1.0


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_discriminator_scores_each_image(image_size, channels):
    net = models.build_discriminator(image_size, channels, width=4)
    scores = np.asarray(net(np.zeros((5, image_size, image_size, channels), np.float32)))
    assert scores.shape == (5, 1)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize("phase_convolutions", [False, True])
def test_a_spectral_discriminator_trains_with_unit_spectral_norms(policy, phase_convolutions):
    import tensorflow as tf

    # Fixed weights: how fast the power iteration converges depends on them (and seed 1's made
    # float16 power iterations underflow into NaN scores).
    keras.utils.set_random_seed(1)
    net = models.build_discriminator(
        32,
        1,
        width=4,
        dtype=policy,
        phase_convolutions=phase_convolutions,
        normalization="spectral",
    )
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in net.layers)
    wrapped = [
        layer for layer in net.layers if isinstance(layer, keras.layers.SpectralNormalization)
    ]
    assert [layer.name for layer in wrapped] == [
        "down0_conv_sn",
        "down1_conv_sn",
        "down2_conv_sn",
        "score_conv_sn",
    ]
    images = np.random.default_rng(0).random((4, 32, 32, 1), np.float32)
    with tf.GradientTape() as tape:
        scores = net(images, training=True)
    assert scores.dtype == "float32" and scores.shape == (4, 1)
    gradients = tape.gradient(scores, net.trainable_variables)
    assert all(np.isfinite(g).all() for g in gradients)
    # One power iteration per training call: the largest singular value converges to 1 (from
    # about 0.1 at the initialisation), slowly where the top two are close.
    for _ in range(200):
        net(images, training=True)
    for layer in wrapped:
        kernel = np.asarray(layer.layer.kernel)
        norm = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), ord=2)
        assert norm == pytest.approx(1.0, abs=0.03)
        # Written back in float32, not rounded to the compute precision.
        assert not np.array_equal(kernel, kernel.astype(np.float16).astype(np.float32))


def test_a_spectral_discriminator_leaves_its_kernels_alone_at_inference():
    net = models.build_discriminator(32, 1, width=4, normalization="spectral")
    before = [np.asarray(w) for w in net.weights]
    net(np.ones((2, 32, 32, 1), np.float32), training=False)
    assert all(np.array_equal(b, np.asarray(w)) for b, w in zip(before, net.weights))


def test_an_unknown_discriminator_normalization_is_refused():
    with pytest.raises(ValueError, match="normalization must be one of"):
        models.build_discriminator(32, 1, width=4, normalization="layer")


def test_mask_net_widths_double_toward_the_bottleneck():
    net = models.build_mask_net(32, 1, width=8)
    conv_filters = [layer.filters for layer in net.layers if hasattr(layer, "filters")]
    assert conv_filters == [8, 16, 32, 64, 32, 16, 8, 1]
    assert net.get_layer("down3_conv").output.shape[1:3] == (2, 2)


def test_discriminator_has_no_final_sigmoid():
    net = models.build_discriminator(32, 1, width=4)
    scores = np.asarray(net(np.ones((2, 32, 32, 1), np.float32) * 50))
    assert net.layers[-1].get_config()["activation"] == "linear"
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("phase_convolutions", [False, True])
def test_mixed_precision_keeps_float32_outputs_variables_and_gradients(policy, phase_convolutions):
    import tensorflow as tf

    mask_net = models.build_mask_net(
        32, 1, width=4, dtype=policy, phase_convolutions=phase_convolutions
    )
    discriminator = models.build_discriminator(
        32, 1, width=4, dtype=policy, phase_convolutions=phase_convolutions
    )
    x = np.full((2, 32, 32, 1), 0.5, np.float32)
    with tf.GradientTape() as tape:
        scores = discriminator(mask_net(x, training=True), training=True)
    assert mask_net(x).dtype == "float32" and scores.dtype == "float32"
    assert mask_net.get_layer("down1_conv").compute_dtype == policy.split("_")[1]
    assert all(v.dtype == "float32" for v in mask_net.weights)
    gradients = tape.gradient(scores, mask_net.trainable_variables)
    assert all(g.dtype == "float32" and np.isfinite(g).all() for g in gradients)


@pytest.mark.parametrize("image_size, channels", [(48, 1), (32, 2)])
def test_unsupported_shapes_are_refused(image_size, channels):
    with pytest.raises(ValueError, match="image_size"):
        models.build_mask_net(image_size, channels)
    with pytest.raises(ValueError, match="image_size"):
        models.build_discriminator(image_size, channels)


def test_batch_norm_uses_running_statistics_at_inference():
    net = models.build_mask_net(32, 1, width=4)
    x = np.random.default_rng(1).random((4, 32, 32, 1), np.float32)
    np.testing.assert_array_equal(
        np.asarray(net(x[:1], training=False)), np.asarray(net(x, training=False))[:1]
    )
    assert not np.allclose(
        np.asarray(net(x[:1], training=True)), np.asarray(net(x, training=True))[:1]
    )
    keras.backend.clear_session()
