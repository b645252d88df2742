"""Loss terms of Adversarial Pair Unmix-and-Remix (Hoshen, ICASSP 2019), one pure function each.

Notation follows Sec. 3 of the paper: y are real mixtures, x~ = y * M(y) and b~ = y - x~ the
first-pass source estimates, z the remixed pairs (Eq. 3), y_bar the mixtures recovered by a second
unmix-and-remix (Eq. 7-8). The paper writes sums; these are means over every element so the weights
alpha and beta do not depend on batch or image size. All functions take float tensors of any
dtype and return a float32 scalar.
"""

import functools

import tensorflow as tf

# Keeps the batch-level equity ratio finite when a batch carries no energy at all.
_EPSILON = 1e-6


def _f32(tensor):
    return tf.cast(tensor, tf.float32)


def discriminator_loss_eq4(d_real, d_fake):
    """L_D, Eq. 4: LS-GAN discriminator loss, real mixtures -> 1, remixes -> 0.

    Args:
      d_real: D(y), `[batch, 1]` raw (unbounded) discriminator scores of real mixtures.
      d_fake: D(z), `[batch, 1]` scores of remixed mixtures.
    """
    return tf.reduce_mean(tf.square(_f32(d_real) - 1.0)) + tf.reduce_mean(tf.square(_f32(d_fake)))


def mask_adversarial_loss_eq5(d_fake):
    """L_M, Eq. 5: the mask net wants D to score its remixes z as real (1).

    Args:
      d_fake: D(z), `[batch, 1]` raw discriminator scores of remixed mixtures.
    """
    return tf.reduce_mean(tf.square(_f32(d_fake) - 1.0))


def energy_equity_loss_eq6(x_tilde, b_tilde):
    """L_E, Eq. 6 as printed: mean over pixels of (y M)^2 + (y (1 - M))^2.

    Per pixel this is minimised by M = 1/2, i.e. it pushes each pixel to be shared, not each source
    to carry energy, so it does not keep training away from the trivial separation x~ = y, b~ = 0
    (`energy_equity_loss_batch` does; docs/method.md); kept as `--energy=pixel` to reproduce the
    paper's text.

    Args:
      x_tilde: `[batch, H, W, C]` first source estimates y * M(y), in [0, 1].
      b_tilde: `[batch, H, W, C]` second source estimates y - x_tilde, in [0, 1].
    """
    return tf.reduce_mean(tf.square(_f32(x_tilde)) + tf.square(_f32(b_tilde)))


def mean_energies(x_tilde, b_tilde):
    """(E|x~|^2, E|b~|^2): per-image energies averaged over the global batch.

    Under a multi-replica `tf.distribute` strategy the means are all-reduced across replicas
    (differentiably: the gradient of an all-reduce is an all-reduce), so every replica gets the
    means of the whole global batch, as one device would; with equal per-replica batches the mean
    of the replicas' means is the global mean.

    Args:
      x_tilde: `[batch, H, W, C]` first source estimates y * M(y), in [0, 1].
      b_tilde: `[batch, H, W, C]` second source estimates y - x_tilde, in [0, 1].

    Returns:
      Two float32 scalars >= 0.
    """
    energies = [
        tf.reduce_mean(tf.reduce_sum(tf.square(_f32(t)), axis=[1, 2, 3]))
        for t in (x_tilde, b_tilde)
    ]
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        energies = replica.all_reduce(tf.distribute.ReduceOp.MEAN, energies)
    return tuple(energies)


def energy_equity_loss_batch(x_tilde, b_tilde):
    """Batch-level energy equity, the working form of Eq. 6's intent (`--energy=batch`).

    ((E|x~|^2 - E|b~|^2) / (E|x~|^2 + E|b~|^2))^2 with E the mean over the batch of per-image
    energies. It is zero whenever both outputs carry the same energy on average, which the true
    separation nearly does (MNIST digits 0-4 and 5-9 differ by ~1% in mean energy), and it is 1 at
    the trivial solution x~ = y, b~ = 0 that the adversarial loss alone admits. Normalising by the
    total makes it scale-free. A per-image version would be biased: single digits differ in energy.
    The batch is the global one on every replica (see `mean_energies`): a ratio of per-replica
    means would be a different, noisier term for every device count.

    Args:
      x_tilde: `[batch, H, W, C]` first source estimates y * M(y), in [0, 1].
      b_tilde: `[batch, H, W, C]` second source estimates y - x_tilde, in [0, 1].
    """
    energy_x, energy_b = mean_energies(x_tilde, b_tilde)
    return tf.square((energy_x - energy_b) / (energy_x + energy_b + _EPSILON))


def energy_equity_loss_hinge(x_tilde, b_tilde, margin=0.5):
    """Batch-level energy equity with a dead zone around equal energy (`--energy=hinge`).

    With d = (E|x~|^2 - E|b~|^2) / (E|x~|^2 + E|b~|^2) in [-1, 1], the imbalance that
    `energy_equity_loss_batch` squares, this is (max(|d| - margin, 0) / (1 - margin))^2: zero
    while each output carries between (1 - margin) / 2 and (1 + margin) / 2 of the energy (25% to
    75% at the default 0.5), rising to 1 at the trivial solution x~ = y, b~ = 0. Two sources
    rarely carry equal energy, and the batch term pulls the outputs toward equal shares even when
    the true separation has unequal ones; this one only keeps training away from collapse.

    Args:
      x_tilde: `[batch, H, W, C]` first source estimates y * M(y), in [0, 1].
      b_tilde: `[batch, H, W, C]` second source estimates y - x_tilde, in [0, 1].
      margin: the imbalance |d| in [0, 1) that costs nothing; 0 is the batch term.
    """
    energy_x, energy_b = mean_energies(x_tilde, b_tilde)
    imbalance = tf.abs(energy_x - energy_b) / (energy_x + energy_b + _EPSILON)
    return tf.square(tf.nn.relu(imbalance - margin) / (1.0 - margin))


def energy_loss(name, margin=0.5):
    """The energy-equity term `--energy=name` as a function of `(x_tilde, b_tilde)`; `margin` is
    the hinge term's dead zone (`energy_equity_loss_hinge`), unused by the others."""
    loss = ENERGY_LOSSES[name]
    return functools.partial(loss, margin=margin) if name == "hinge" else loss


def cycle_loss_eq9(y_bar, y):
    """L_C, Eq. 9: mean absolute difference between the twice unmixed-and-remixed pair and y.

    Args:
      y_bar: `[batch, H, W, C]` mixtures recovered by Eq. 7-8, in [0, 1].
      y: `[batch, H, W, C]` the original mixtures, in [0, 1].
    """
    return tf.reduce_mean(tf.abs(_f32(y_bar) - _f32(y)))


def supervised_loss(x_hat, x):
    """L1 between the clean-scale estimate 2 y M(y) and the true source: the supervised bound.

    Args:
      x_hat: `[batch, H, W, C]` estimate of source a on the clean scale, in [0, 1].
      x: `[batch, H, W, C]` clean source a, in [0, 1].
    """
    return tf.reduce_mean(tf.abs(_f32(x_hat) - _f32(x)))


ENERGY_LOSSES = {
    "batch": energy_equity_loss_batch,
    "pixel": energy_equity_loss_eq6,
    "hinge": energy_equity_loss_hinge,
    "none": lambda x_tilde, b_tilde: tf.constant(0.0),
}
