import numpy as np
import pytest
import tensorflow as tf

from aur_tf import config, losses


def test_discriminator_loss_eq4_hand_computed():
    d_real = tf.constant([[1.0], [0.0]])  # (1-1)^2, (0-1)^2 -> mean 0.5
    d_fake = tf.constant([[0.0], [2.0]])  # 0^2, 2^2 -> mean 2.0
    assert float(losses.discriminator_loss_eq4(d_real, d_fake)) == pytest.approx(2.5)


def test_mask_adversarial_loss_eq5_hand_computed():
    d_fake = tf.constant([[1.0], [3.0], [-1.0]])  # 0, 4, 4 -> mean 8/3
    assert float(losses.mask_adversarial_loss_eq5(d_fake)) == pytest.approx(8.0 / 3.0)


def test_energy_equity_loss_eq6_is_mean_of_both_squared_outputs():
    x_tilde = tf.fill([2, 2, 2, 1], 0.5)
    b_tilde = tf.fill([2, 2, 2, 1], 0.25)
    assert float(losses.energy_equity_loss_eq6(x_tilde, b_tilde)) == pytest.approx(0.3125)


def test_energy_equity_loss_eq6_prefers_the_half_mask_per_pixel():
    y = tf.fill([1, 4, 4, 1], 0.8)
    half = losses.energy_equity_loss_eq6(y * 0.5, y * 0.5)
    trivial = losses.energy_equity_loss_eq6(y, y * 0.0)
    assert float(half) < float(trivial)


def test_energy_equity_loss_batch_hand_computed():
    # Per-image energies: x~ 4 * 0.25 = 1 and 4 * 1 = 4 (mean 2.5); b~ 4 * 0.25 = 1 (mean 1).
    x_tilde = tf.stack([tf.fill([2, 2, 1], 0.5), tf.fill([2, 2, 1], 1.0)])
    b_tilde = tf.fill([2, 2, 2, 1], 0.5)
    expected = ((2.5 - 1.0) / (2.5 + 1.0)) ** 2
    loss = losses.energy_equity_loss_batch(x_tilde, b_tilde)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_energy_equity_loss_batch_is_one_at_collapse_and_zero_at_equal_energy():
    y = tf.random.stateless_uniform([4, 8, 8, 1], seed=[1, 2])
    collapsed = losses.energy_equity_loss_batch(y, tf.zeros_like(y))
    assert float(collapsed) == pytest.approx(1.0, abs=1e-5)
    # Equal batch energy but unequal per image: only the batch means need to agree.
    x_tilde = tf.concat([y[:2], tf.zeros_like(y[2:])], axis=0)
    b_tilde = tf.concat([tf.zeros_like(y[:2]), y[:2]], axis=0)
    assert float(losses.energy_equity_loss_batch(x_tilde, b_tilde)) == pytest.approx(0.0, abs=1e-10)


def test_energy_equity_loss_batch_is_finite_on_empty_images():
    zeros = tf.zeros([2, 4, 4, 1])
    assert float(losses.energy_equity_loss_batch(zeros, zeros)) == 0.0


def _outputs_with_share(share):
    """`(x~, b~)`, `[2, 4, 4, 1]` each, whose batch energies split `share : 1 - share`."""
    y = tf.ones([2, 4, 4, 1])
    return y * np.sqrt(share), y * np.sqrt(1.0 - share)


@pytest.mark.parametrize(
    "share, margin, expected",
    [
        (0.5, 0.5, 0.0),
        (0.3, 0.5, 0.0),  # imbalance 0.4, inside the dead zone
        (0.75, 0.5, 0.0),  # at its edge
        (0.9, 0.5, ((0.8 - 0.5) / 0.5) ** 2),
        (0.0, 0.5, 1.0),  # the trivial solution
        (0.3, 0.0, 0.4**2),  # no dead zone: the batch term
    ],
)
def test_energy_equity_loss_hinge_hand_computed(share, margin, expected):
    x_tilde, b_tilde = _outputs_with_share(share)
    loss = losses.energy_equity_loss_hinge(x_tilde, b_tilde, margin)
    assert float(loss) == pytest.approx(expected, abs=1e-5)


def test_energy_loss_passes_the_margin_to_the_hinge_only():
    x_tilde, b_tilde = _outputs_with_share(0.9)
    assert float(losses.energy_loss("hinge", 0.0)(x_tilde, b_tilde)) == pytest.approx(
        float(losses.energy_equity_loss_batch(x_tilde, b_tilde)), rel=1e-5
    )
    assert losses.energy_loss("batch", 0.7) is losses.energy_equity_loss_batch


def test_cycle_loss_eq9_is_mean_absolute_error():
    y = tf.constant(np.arange(8, dtype=np.float32).reshape(2, 2, 2, 1) / 8)
    y_bar = y + tf.constant([0.1, -0.3] * 4, shape=[2, 2, 2, 1])
    assert float(losses.cycle_loss_eq9(y_bar, y)) == pytest.approx(0.2)


def test_supervised_loss_is_l1():
    x = tf.zeros([1, 2, 2, 1])
    assert float(losses.supervised_loss(x + 0.25, x)) == pytest.approx(0.25)


@pytest.mark.parametrize("name", sorted(losses.ENERGY_LOSSES))
def test_losses_return_float32_scalars_for_half_precision_inputs(name):
    x = tf.fill([2, 4, 4, 3], tf.constant(0.25, tf.float16))
    for value in (
        losses.ENERGY_LOSSES[name](x, x),
        losses.cycle_loss_eq9(x, x),
        losses.mask_adversarial_loss_eq5(x[:, 0, 0, :1]),
        losses.discriminator_loss_eq4(x[:, 0, 0, :1], x[:, 0, 0, :1]),
    ):
        assert value.dtype == tf.float32 and value.shape == ()


def test_every_energy_term_the_config_accepts_is_a_loss():
    assert sorted(losses.ENERGY_LOSSES) == sorted(config.ENERGY_TERMS)


def test_energy_none_is_zero():
    x = tf.ones([2, 4, 4, 1])
    assert float(losses.ENERGY_LOSSES["none"](x, 0 * x)) == 0.0
