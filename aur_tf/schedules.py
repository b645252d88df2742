"""Settings that change with the run's step: the energy weight, the learning rates and the
discriminator's instance noise.

All follow the trainer's step counter (the steps trained before the current one), so a
schedule is a function of `--train_steps`' count and resumes with it.
"""

import tensorflow as tf


def linear_fade(value, step, fade_start=0, fade_steps=0):
    """`value`, faded linearly to 0 if `fade_steps` > 0.

    value * clip(1 - (step - fade_start) / fade_steps, 0, 1): the full value up to `fade_start`,
    then linearly down to 0 at `fade_start + fade_steps`, and 0 after; `value` throughout when
    `fade_steps` is 0.

    Args:
      value: the full value, a Python number >= 0.
      step: the steps trained before this one (0 at the first), an integer scalar or tensor.
      fade_start, fade_steps: Python integers >= 0.

    Returns:
      A float32 scalar tensor.
    """
    if fade_steps == 0:
        return tf.constant(value, tf.float32)
    # The steps into the fade, clipped while exact integers, then a float32 fraction in [0, 1].
    faded = tf.clip_by_value(tf.cast(step, tf.int64) - fade_start, 0, fade_steps)
    return value * (1.0 - tf.cast(faded, tf.float32) / float(fade_steps))
