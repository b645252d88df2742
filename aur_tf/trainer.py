"""Keras models whose `train_step` is one step of Adversarial Pair Unmix-and-Remix (Sec. 3-4).

`UnmixRemixTrainer` sees mixtures only: its training data is a batch of 2B mixtures, read as B
pairs (y1, y2) = (first half, second half). `SupervisedTrainer` is the comparison upper bound and
is the only trainer that is ever given clean sources.
"""
import keras
import tensorflow as tf

from aur_tf import losses

LOSS_NAMES = ("loss_total", "loss_cycle", "loss_adversarial", "loss_energy", "loss_disc")


def make_optimizer(learning_rate, beta1, precision):
    """Adam (the paper's update rule), wrapped for dynamic loss scaling under float16.

    bfloat16 keeps float32's exponent range, so only float16 needs loss scaling. The wrapper is
    applied here rather than by `compile`, which would wrap only `self.optimizer`.
    """
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta1)
    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _swap_halves(tensor):
    """Rolls a `[2B, ...]` batch by B so row i of the first half meets row i of the second."""
    return tf.roll(tensor, shift=tf.shape(tensor)[0] // 2, axis=0)


def _apply_gradients(optimizer, tape, scaled_loss, variables):
    """One optimizer update; returns 1 if loss scaling skipped it for non-finite gradients.

    `scaled_loss` must be `optimizer.scale_loss(loss)` computed inside `tape`, so that float16
    gradients are taken of the scaled loss; `apply` unscales them.
    """
    gradients = tape.gradient(scaled_loss, variables)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        finite = optimizer.check_finite(gradients)
    else:
        finite = tf.constant(True)
    optimizer.apply(gradients, variables)
    return 1 - tf.cast(finite, tf.int64)


class _StepCountingModel(keras.Model):
    """Shared bookkeeping: a global step variable and one mean tracker per reported scalar."""

    def __init__(self, mask_net, tracker_names, **kwargs):
        super().__init__(**kwargs)
        self.mask_net = mask_net
        self.step_counter = keras.Variable(0, dtype="int64", trainable=False, name="global_step")
        self.skipped_steps = keras.Variable(0, dtype="int64", trainable=False, name="skipped_steps")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in tracker_names}

    @property
    def metrics(self):
        # Listing the trackers here lets Keras reset them; the training monitor resets them after
        # each log line so every line reports the mean over its own window.
        return list(self._trackers.values())

    def call(self, mixtures, training=False):
        """`[batch, H, W, C]` mixtures in [0, 1] -> masks M(y) of the same shape in (0, 1)."""
        return self.mask_net(mixtures, training=training)

    def _report(self, values):
        for name, value in values.items():
            self._trackers[name].update_state(value)
        self.step_counter.assign_add(1)
        return {name: tracker.result() for name, tracker in self._trackers.items()}


class UnmixRemixTrainer(_StepCountingModel):
    """Trains the mask net M and the discriminator D from mixtures alone.

    One `train_step` on mixtures y `[2B, H, W, C]` in [0, 1]:
      1. unmix: x~ = y M(y), b~ = y - x~                                (Eq. 1-2)
      2. remix across the pair: z1 = x~1 + b~2, z2 = x~2 + b~1          (Eq. 3)
      3. every `mask_steps_per_disc_step`-th step, update D on y vs z    (Eq. 4)
      4. unmix and remix z again: y_bar1 = x_bar1 + b_bar1, ...          (Eq. 7-8)
      5. update M on L_C + alpha L_M + beta L_E                          (Eq. 5, 6, 9, 10)
    """

    def __init__(self, mask_net, discriminator, *, alpha=5.0, beta=5.0, energy="batch",
                 mask_steps_per_disc_step=4, **kwargs):
        super().__init__(mask_net, LOSS_NAMES + ("mask_mean", "energy_share"), **kwargs)
        self.discriminator = discriminator
        self.alpha = alpha
        self.beta = beta
        self.energy_loss = losses.ENERGY_LOSSES[energy]
        self.mask_steps_per_disc_step = mask_steps_per_disc_step

    def compile(self, mask_optimizer, disc_optimizer, jit_compile=False):
        super().compile(optimizer=mask_optimizer, jit_compile=jit_compile)
        self.mask_optimizer = mask_optimizer
        self.disc_optimizer = disc_optimizer
        # Built now because the discriminator update runs inside a conditional, where a first
        # call must not create variables.
        mask_optimizer.build(self.mask_net.trainable_variables)
        disc_optimizer.build(self.discriminator.trainable_variables)

    def _disc_update(self, mixtures, remixes):
        with tf.GradientTape() as tape:
            loss = losses.discriminator_loss_eq4(self.discriminator(mixtures, training=True),
                                                 self.discriminator(remixes, training=True))
            scaled_loss = self.disc_optimizer.scale_loss(loss)
        skipped = _apply_gradients(self.disc_optimizer, tape, scaled_loss,
                                   self.discriminator.trainable_variables)
        return loss, skipped

    def train_step(self, mixtures):
        with tf.GradientTape() as tape:
            masks = self.mask_net(mixtures, training=True)
            x_tilde = mixtures * masks
            b_tilde = mixtures - x_tilde
            remixes = x_tilde + _swap_halves(b_tilde)

            # D learns from this step's remixes but must not backpropagate into M.
            disc_step = tf.equal(self.step_counter % self.mask_steps_per_disc_step, 0)
            disc_loss, disc_skipped = tf.cond(
                disc_step,
                lambda: self._disc_update(mixtures, tf.stop_gradient(remixes)),
                lambda: (tf.constant(0.0), tf.constant(0, tf.int64)))

            x_bar = remixes * self.mask_net(remixes, training=True)
            b_bar = remixes - x_bar
            y_bar = x_bar + _swap_halves(b_bar)

            cycle = losses.cycle_loss_eq9(y_bar, mixtures)
            adversarial = losses.mask_adversarial_loss_eq5(self.discriminator(remixes, training=True))
            energy = self.energy_loss(x_tilde, b_tilde)
            total = cycle + self.alpha * adversarial + self.beta * energy
            scaled_total = self.mask_optimizer.scale_loss(total)
        mask_skipped = _apply_gradients(self.mask_optimizer, tape, scaled_total,
                                        self.mask_net.trainable_variables)
        self.skipped_steps.assign_add(mask_skipped + disc_skipped)

        # L_D exists only on discriminator steps; the others must not pull its mean to zero.
        self._trackers["loss_disc"].update_state(disc_loss, sample_weight=tf.cast(disc_step, tf.float32))
        energy_x = tf.reduce_sum(tf.square(x_tilde))
        return self._report({
            "loss_total": total, "loss_cycle": cycle, "loss_adversarial": adversarial,
            "loss_energy": energy, "mask_mean": tf.reduce_mean(masks),
            # Near 0 or 1 means one output takes (almost) everything: the trivial separation.
            "energy_share": energy_x / (energy_x + tf.reduce_sum(tf.square(b_tilde)) + 1e-12)})


class SupervisedTrainer(_StepCountingModel):
    """Upper bound: the same mask net trained with clean sources, L1 on 2 y M(y) vs x.

    Training data are pairs (mixtures, sources_a), each `[batch, H, W, C]` in [0, 1].
    """

    def __init__(self, mask_net, **kwargs):
        super().__init__(mask_net, ("loss_total",), **kwargs)

    def compile(self, mask_optimizer, jit_compile=False):
        super().compile(optimizer=mask_optimizer, jit_compile=jit_compile)
        self.mask_optimizer = mask_optimizer
        # Built now so that a checkpoint restores (and a damaged one fails) at restore time,
        # not later at the first step, as with UnmixRemixTrainer.
        mask_optimizer.build(self.mask_net.trainable_variables)

    def train_step(self, data):
        mixtures, sources_a = data
        with tf.GradientTape() as tape:
            loss = losses.supervised_loss(2.0 * mixtures * self.mask_net(mixtures, training=True),
                                          sources_a)
            scaled_loss = self.mask_optimizer.scale_loss(loss)
        skipped = _apply_gradients(self.mask_optimizer, tape, scaled_loss,
                                   self.mask_net.trainable_variables)
        self.skipped_steps.assign_add(skipped)
        return self._report({"loss_total": loss})
