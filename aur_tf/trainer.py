"""Keras models whose `train_step` is one step of Adversarial Pair Unmix-and-Remix (Sec. 3-4).

`UnmixRemixTrainer` sees mixtures only: its training data is a batch of 2B mixtures, read as B
pairs (y1, y2) = (first half, second half). Under a tf.distribute strategy with R replicas each
replica's batch is 2B/R mixtures, paired the same way within it, and the step is the one-device
step on the global batch (see `_replica_share`, `_cond_on_every_replica`, `_apply_gradients`).
`SupervisedTrainer` is the comparison upper bound and is the only trainer that is ever given clean
sources.
"""

import keras
import numpy as np
import tensorflow as tf

from aur_tf import losses, schedules

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


def _replica_share(loss):
    """The part of a loss that this replica differentiates: loss / R on R replicas in sync.

    Every loss here is a mean over the replica's batch, and Keras 3's `optimizer.apply` all-reduces
    gradients with SUM (`TFOptimizer._all_reduce_sum_gradients`), so scaling by 1/R makes the
    applied gradient the gradient of the mean over the global batch: what one device computes on
    the whole batch. Identity on one device.
    """
    return loss / tf.distribute.get_replica_context().num_replicas_in_sync


def _apply_gradients(optimizer, tape, scaled_loss, variables):
    """One optimizer update; returns 1 if loss scaling skipped it for non-finite gradients.

    `scaled_loss` must be `optimizer.scale_loss(_replica_share(loss))` computed inside `tape`, so
    that float16 gradients are taken of the scaled loss; `apply` unscales and all-reduces them.
    """
    gradients = tape.gradient(scaled_loss, variables)
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer.apply(gradients, variables)
        return tf.constant(0, tf.int64)
    finite = optimizer.check_finite(gradients)
    replica = tf.distribute.get_replica_context()
    if replica.num_replicas_in_sync > 1:
        # LossScaleOptimizer decides to skip from the first local replica's gradients before they
        # are summed: an overflow on another replica would reach the weights through the sum, and
        # workers deciding differently would deadlock in the all-reduce. Poisoning every
        # replica's gradients when any overflowed makes all replicas decide alike.
        overflows = replica.all_reduce(
            tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32)
        )
        finite = tf.equal(overflows, 0.0)
        poison = tf.where(finite, 0.0, float("nan"))
        gradients = [g + tf.cast(poison, g.dtype) for g in gradients]
    optimizer.apply(gradients, variables)
    return 1 - tf.cast(finite, tf.int64)


def _cond_on_every_replica(pred, true_fn, false_fn, args):
    """`tf.cond(pred, true_fn(*args), false_fn(*args))` whose branches may all-reduce.

    tf.distribute cannot build a branch that synchronizes replicas (an optimizer update, a
    synchronized BatchNorm) inside replica context: it raises "`merge_call` called while defining
    a new graph". So, as Keras's LossScaleOptimizer does, the branch is chosen in cross-replica
    context and then run on every replica. `pred` must be equal on all replicas; `args` are
    per-replica tensors, and so are the results.
    """
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        return tf.cond(pred, lambda: true_fn(*args), lambda: false_fn(*args))

    def choose_in_cross_replica_context(strategy, pred, *args):
        run = strategy.extended.call_for_each_replica
        return tf.cond(
            strategy.experimental_local_results(pred)[0],
            lambda: run(true_fn, args=args),
            lambda: run(false_fn, args=args),
        )

    return tf.distribute.get_replica_context().merge_call(
        choose_in_cross_replica_context, args=(pred, *args)
    )


class _StepCountingModel(keras.Model):
    """Shared bookkeeping: a global step variable and one mean tracker per reported scalar."""

    def __init__(
        self,
        mask_net,
        tracker_names,
        learning_rate_decay_start=0,
        learning_rate_decay_steps=0,
        **kwargs,
    ):
        decaying = ("learning_rate_scale",) if learning_rate_decay_steps > 0 else ()
        super().__init__(**kwargs)
        self.mask_net = mask_net
        self.learning_rate_decay_start = learning_rate_decay_start
        self.learning_rate_decay_steps = learning_rate_decay_steps
        # Each optimizer with the rate it was made with, which the decay scales (`compile`).
        self._configured_rates = []
        # Every replica counts the same steps (skips are agreed across replicas, see
        # `_apply_gradients`), so one replica's increment is the update.
        self.step_counter = keras.Variable(
            0, dtype="int64", trainable=False, name="global_step", aggregation="only_first_replica"
        )
        self.skipped_steps = keras.Variable(
            0,
            dtype="int64",
            trainable=False,
            name="skipped_steps",
            aggregation="only_first_replica",
        )
        self._trackers = {name: keras.metrics.Mean(name=name) for name in tracker_names + decaying}

    @property
    def metrics(self):
        # Listing the trackers here lets Keras reset them; the training monitor resets them after
        # each log line so every line reports the mean over its own window.
        return list(self._trackers.values())

    def call(self, mixtures, training=False):
        """`[batch, H, W, C]` mixtures in [0, 1] -> masks M(y) of the same shape in (0, 1)."""
        return self.mask_net(mixtures, training=training)

    def _remember_learning_rates(self, *optimizers):
        """Records each optimizer's learning rate as made, the rate that `--train_steps`'
        schedule scales; called by `compile`, before any checkpoint is restored."""
        # np.asarray reads a tf.distribute variable too, which float() refuses.
        self._configured_rates = [(o, float(np.asarray(o.learning_rate))) for o in optimizers]

    def _decay_learning_rates(self):
        """Sets this step's learning rates: each configured rate, faded linearly to 0 over the
        `learning_rate_decay_steps` after `learning_rate_decay_start` (`schedules.linear_fade`).

        Returns the scalars to report: `learning_rate_scale`, the fraction of the configured rates
        used now (a float32 scalar in [0, 1]), or none when nothing decays.
        """
        if self.learning_rate_decay_steps == 0:
            return {}
        scale = schedules.linear_fade(
            1.0, self.step_counter, self.learning_rate_decay_start, self.learning_rate_decay_steps
        )
        for optimizer, rate in self._configured_rates:
            optimizer.learning_rate = rate * scale
        return {"learning_rate_scale": scale}

    def _report(self, values):
        """Tracks one step's scalars and counts the step; returns every tracker's mean, `[1]` each.

        Keras averages the returned values over replicas; every value is a mean over the replica's
        batch, and the batches are equal, so that average is the global batch's value, as on one
        device. The unit axis is there because under MultiWorkerMirroredStrategy Keras averages with
        `strategy.reduce(MEAN, axis=0)`, which fails on scalars (tensorflow/tensorflow#72388).
        """
        for name, value in values.items():
            self._trackers[name].update_state(value)
        self.step_counter.assign_add(1)
        return {name: tf.reshape(tracker.result(), [1]) for name, tracker in self._trackers.items()}


class UnmixRemixTrainer(_StepCountingModel):
    """Trains the mask net M and the discriminator D from mixtures alone.

    One `train_step` on mixtures y `[2B, H, W, C]` in [0, 1]:
      1. unmix: x~ = y M(y), b~ = y - x~                                (Eq. 1-2)
      2. remix across the pair: z1 = x~1 + b~2, z2 = x~2 + b~1          (Eq. 3)
      3. every `mask_steps_per_disc_step`-th step, update D on y vs z    (Eq. 4)
      4. unmix and remix z again: y_bar1 = x_bar1 + b_bar1, ...          (Eq. 7-8)
      5. update M on L_C + alpha L_M + beta_t L_E                        (Eq. 5, 6, 9, 10)
    beta_t is beta, or with `beta_fade_steps` > 0 beta faded to 0 over the steps after
    `beta_fade_start` (`schedules.linear_fade`). The pull toward equal energy is what leads
    training away from the trivial separation early on, but held to the end it biases the outputs
    toward equal shares when the sources carry unequal energy; fading it leaves the end of
    training to L_C and L_M. With `learning_rate_decay_steps` > 0 both learning rates fade the
    same way after `learning_rate_decay_start`.

    With `instance_noise` sigma > 0, D sees every image, mixture or remix, in its update and in
    L_M, plus Gaussian noise N(0, sigma_t^2) per pixel (Sonderby et al., 2016), sigma_t faded to 0
    over the first `instance_noise_steps` steps (constant when 0). The noise blurs the line
    between the two distributions, so D cannot win by details M cannot yet get right and its
    gradient stays informative.
    """

    def __init__(
        self,
        mask_net,
        discriminator,
        *,
        alpha=5.0,
        beta=5.0,
        energy="batch",
        energy_margin=0.5,
        beta_fade_start=0,
        beta_fade_steps=0,
        mask_steps_per_disc_step=4,
        instance_noise=0.0,
        instance_noise_steps=0,
        **kwargs,
    ):
        # The weight of L_E and the noise are reported only in runs where they change.
        fade_names = ("beta_now",) if beta_fade_steps > 0 else ()
        if instance_noise > 0 and instance_noise_steps > 0:
            fade_names += ("instance_noise_now",)
        super().__init__(
            mask_net, LOSS_NAMES + ("mask_mean", "energy_share") + fade_names, **kwargs
        )
        self.discriminator = discriminator
        self.alpha = alpha
        self.beta = beta
        self.beta_fade_start = beta_fade_start
        self.beta_fade_steps = beta_fade_steps
        self.energy_loss = losses.energy_loss(energy, energy_margin)
        self.mask_steps_per_disc_step = mask_steps_per_disc_step
        self.instance_noise = instance_noise
        self.instance_noise_steps = instance_noise_steps

    def compile(self, mask_optimizer, disc_optimizer, jit_compile=False):
        super().compile(optimizer=mask_optimizer, jit_compile=jit_compile)
        self.mask_optimizer = mask_optimizer
        self.disc_optimizer = disc_optimizer
        # Built now because the discriminator update runs inside a conditional, where a first
        # call must not create variables.
        mask_optimizer.build(self.mask_net.trainable_variables)
        disc_optimizer.build(self.discriminator.trainable_variables)
        self._remember_learning_rates(mask_optimizer, disc_optimizer)

    def _disc_update(self, mixtures, remixes):
        with tf.GradientTape() as tape:
            loss = losses.discriminator_loss_eq4(
                self.discriminator(mixtures, training=True),
                self.discriminator(remixes, training=True),
            )
            scaled_loss = self.disc_optimizer.scale_loss(_replica_share(loss))
        skipped = _apply_gradients(
            self.disc_optimizer, tape, scaled_loss, self.discriminator.trainable_variables
        )
        return loss, skipped

    def _disc_input(self, images, noise_std):
        """What D sees of `[batch, H, W, C]` images: the images, plus instance noise if any."""
        if self.instance_noise == 0:
            return images
        return images + noise_std * tf.random.normal(tf.shape(images), dtype=images.dtype)

    def train_step(self, mixtures):
        scheduled = self._decay_learning_rates()
        noise_std = schedules.linear_fade(
            self.instance_noise, self.step_counter, 0, self.instance_noise_steps
        )
        with tf.GradientTape() as tape:
            masks = self.mask_net(mixtures, training=True)
            x_tilde = mixtures * masks
            b_tilde = mixtures - x_tilde
            remixes = x_tilde + _swap_halves(b_tilde)

            # D learns from this step's remixes but must not backpropagate into M.
            disc_step = tf.equal(self.step_counter % self.mask_steps_per_disc_step, 0)
            disc_loss, disc_skipped = _cond_on_every_replica(
                disc_step,
                self._disc_update,
                lambda *_: (tf.constant(0.0), tf.constant(0, tf.int64)),
                args=(
                    self._disc_input(mixtures, noise_std),
                    self._disc_input(tf.stop_gradient(remixes), noise_std),
                ),
            )

            x_bar = remixes * self.mask_net(remixes, training=True)
            b_bar = remixes - x_bar
            y_bar = x_bar + _swap_halves(b_bar)

            cycle = losses.cycle_loss_eq9(y_bar, mixtures)
            adversarial = losses.mask_adversarial_loss_eq5(
                self.discriminator(self._disc_input(remixes, noise_std), training=True)
            )
            energy = self.energy_loss(x_tilde, b_tilde)
            # Read before `_report` counts this step: the first step is step 0.
            beta_now = schedules.linear_fade(
                self.beta, self.step_counter, self.beta_fade_start, self.beta_fade_steps
            )
            total = cycle + self.alpha * adversarial + beta_now * energy
            scaled_total = self.mask_optimizer.scale_loss(_replica_share(total))
        mask_skipped = _apply_gradients(
            self.mask_optimizer, tape, scaled_total, self.mask_net.trainable_variables
        )
        self.skipped_steps.assign_add(mask_skipped + disc_skipped)

        # L_D exists only on discriminator steps; the others must not pull its mean to zero.
        self._trackers["loss_disc"].update_state(
            disc_loss, sample_weight=tf.cast(disc_step, tf.float32)
        )
        energy_x, energy_b = losses.mean_energies(x_tilde, b_tilde)
        scalars = {
            "loss_total": total,
            "loss_cycle": cycle,
            "loss_adversarial": adversarial,
            "loss_energy": energy,
            "mask_mean": tf.reduce_mean(masks),
            # Near 0 or 1 means one output takes (almost) everything: the trivial separation.
            "energy_share": energy_x / (energy_x + energy_b + 1e-12),
        }
        if self.beta_fade_steps > 0:
            scalars["beta_now"] = beta_now
        if "instance_noise_now" in self._trackers:
            scalars["instance_noise_now"] = noise_std
        return self._report({**scalars, **scheduled})


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
        self._remember_learning_rates(mask_optimizer)

    def train_step(self, data):
        mixtures, sources_a = data
        scheduled = self._decay_learning_rates()
        with tf.GradientTape() as tape:
            loss = losses.supervised_loss(
                2.0 * mixtures * self.mask_net(mixtures, training=True), sources_a
            )
            scaled_loss = self.mask_optimizer.scale_loss(_replica_share(loss))
        skipped = _apply_gradients(
            self.mask_optimizer, tape, scaled_loss, self.mask_net.trainable_variables
        )
        self.skipped_steps.assign_add(skipped)
        return self._report({"loss_total": loss, **scheduled})
