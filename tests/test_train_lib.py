import dataclasses
import glob
import json
import logging
import os
import re

import numpy as np
import pytest

from aur_tf import machine, train_lib
from aur_tf.data.mixtures import MixtureDataset, MixtureSplit
from aur_tf.errors import TrainingDiverged, UserError

EVAL_FIELDS = {
    "psnr_db",
    "ssim",
    "half_mask_psnr_db",
    "half_mask_ssim",
    "step",
    "train_seconds",
    "config",
    "permutation",
    "energy_share",
    "swapped_fraction",
    "collapsed",
    "history",
    "seconds_to_psnr_db",
    "seconds_to_ssim",
    "skipped_steps",
    "collapse_detected_at_step",
    "machines",
}


def _final_weights(config):
    import tensorflow as tf

    from aur_tf import models

    net = models.build_mask_net(config.image_size, config.channels, config.mask_width)
    tf.train.Checkpoint(mask_net=net).restore(
        tf.train.latest_checkpoint(os.path.join(config.workdir, "checkpoints"))
    ).expect_partial()
    return net.get_weights()


def test_train_writes_eval_json_checkpoints_and_tensorboard(make_config, stroke_data):
    config = make_config()
    results = train_lib.train(config, data=stroke_data)
    with open(os.path.join(config.workdir, "eval.json")) as f:
        written = json.load(f)
    assert EVAL_FIELDS <= set(written)
    assert written["step"] == results["step"] == 6
    assert written["config"]["mask_width"] == 4
    assert [h["step"] for h in written["history"]] == [3, 6]
    assert written["collapse_detected_at_step"] is None
    assert sorted(os.listdir(os.path.join(config.workdir, "checkpoints"))) == [
        "checkpoint",
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
        "ckpt-6.data-00000-of-00001",
        "ckpt-6.index",
    ]
    assert os.listdir(os.path.join(config.workdir, "tensorboard"))


def test_each_history_entry_holds_the_mean_training_scalars_since_the_evaluation_before(
    make_config, stroke_data, caplog
):
    caplog.set_level(logging.INFO, logger="aur_tf")
    results = train_lib.train(make_config(log_every=1), data=stroke_data)
    # Progress lines print each scalar to 4 decimals: "step 2/6 | ... | adversarial 0.5682 ...".
    lines = [
        dict(re.findall(r"(\w+) (-?\d+\.\d{4})\b", message.split(" | ", 3)[3]))
        for message in caplog.messages
        if re.match(r"step \d+/6 \|", message)
    ]
    assert len(lines) == 6
    for entry, window in zip(results["history"], (lines[:3], lines[3:])):
        means = {name.replace("loss_", ""): value for name, value in entry["train_means"].items()}
        assert set(means) == set(window[0]) >= {"adversarial", "disc", "cycle", "energy"}
        for name, value in means.items():
            assert value == pytest.approx(np.mean([float(line[name]) for line in window]), abs=1e-4)


def test_a_worker_other_than_the_chief_writes_nothing_into_the_shared_workdir(
    make_config, stroke_data, monkeypatch
):
    # Two workers writing the same file race (one's rename finds the other's temporary gone).
    config = make_config()
    os.makedirs(config.workdir)
    monkeypatch.setattr(train_lib.distribute, "is_chief", lambda strategy: False)
    assert train_lib.train(config, data=stroke_data)["step"] == 6
    assert os.listdir(config.workdir) == []


@pytest.mark.slow
def test_every_checkpoint_file_and_directory_is_flushed_to_disk(
    make_config, stroke_data, monkeypatch
):
    flushed = []
    fsync = os.fsync

    def recording_fsync(descriptor):
        flushed.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    config = make_config()
    train_lib.train(config, data=stroke_data)
    directory = os.path.realpath(os.path.join(config.workdir, "checkpoints"))
    on_disk = {os.path.join(directory, name) for name in os.listdir(directory)}
    assert on_disk | {directory} <= set(flushed)


def test_unsupervised_training_never_reads_the_ground_truth(make_config, stroke_data):
    """Replacing every clean source (and label) by garbage changes the scores, never the weights."""
    rng = np.random.default_rng(9)
    garbage = rng.random(stroke_data.train.sources_a.shape, np.float32)
    garbage_labels = rng.integers(0, 10, len(garbage))

    def corrupt(split):
        count = len(split.mixtures)
        return MixtureSplit(
            split.mixtures,
            garbage[:count],
            garbage[::-1][:count],
            labels_a=garbage_labels[:count],
            labels_b=garbage_labels[::-1][:count],
        )

    honest_config = make_config("honest")
    blind_config = make_config("blind")
    honest = train_lib.train(honest_config, data=stroke_data)
    blind = train_lib.train(
        blind_config,
        data=MixtureDataset(
            *(corrupt(getattr(stroke_data, split)) for split in ("train", "validation", "test"))
        ),
    )
    for a, b in zip(_final_weights(honest_config), _final_weights(blind_config)):
        np.testing.assert_array_equal(a, b)
    assert honest["psnr_db"] != blind["psnr_db"]
    # The unsupervised score of every evaluation reads mixtures only.
    assert [h["remix_consistency_db"] for h in honest["history"]] == [
        h["remix_consistency_db"] for h in blind["history"]
    ]
    assert honest["test"]["psnr_db"] != blind["test"]["psnr_db"]


def test_evaluations_score_validation_and_test_is_scored_once_at_the_end(
    make_config, stroke_data, monkeypatch
):
    """Swapping the validation and test splits swaps the two scorings and nothing else."""
    scorings = []
    score_test = train_lib.score_test
    monkeypatch.setattr(
        train_lib, "score_test", lambda *args: scorings.append(args) or score_test(*args)
    )
    swapped_data = dataclasses.replace(
        stroke_data, validation=stroke_data.test, test=stroke_data.validation
    )
    honest = train_lib.train(make_config("honest"), data=stroke_data)
    swapped = train_lib.train(make_config("swapped"), data=swapped_data)
    assert len(scorings) == 2  # once per run, though each evaluated twice (steps 3 and 6)
    assert honest["split"] == "validation" and [h["step"] for h in honest["history"]] == [3, 6]
    for metric in ("psnr_db", "ssim", "half_mask_psnr_db"):
        assert honest[metric] == swapped["test"][metric]
        assert honest["test"][metric] == swapped[metric]
    assert honest["psnr_db"] != honest["test"]["psnr_db"]
    with open(os.path.join(make_config("honest").workdir, "eval.json")) as f:
        assert json.load(f)["test"] == json.loads(json.dumps(honest["test"]))


@pytest.mark.slow
@pytest.mark.parametrize("disc_normalization", ["batch", "spectral"])
def test_resume_continues_the_same_step_count_and_result(
    make_config, stroke_data, disc_normalization
):
    straight = make_config("straight", disc_normalization=disc_normalization)
    train_lib.train(straight, data=stroke_data)
    interrupted = make_config("interrupted", train_steps=3, disc_normalization=disc_normalization)
    train_lib.train(interrupted, data=stroke_data)
    resumed = train_lib.train(dataclasses.replace(interrupted, train_steps=6), data=stroke_data)
    assert resumed["step"] == 6
    assert [h["step"] for h in resumed["history"]] == [3, 6]
    for a, b in zip(_final_weights(straight), _final_weights(interrupted)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_eval_json_names_every_machine_the_run_trained_on(make_config, stroke_data, monkeypatch):
    config = make_config(train_steps=3)
    monkeypatch.setattr(machine, "describe", lambda: "first machine")
    assert train_lib.train(config, data=stroke_data)["machines"] == ["first machine"]
    monkeypatch.setattr(machine, "describe", lambda: "second machine")
    resumed = train_lib.train(dataclasses.replace(config, train_steps=6), data=stroke_data)
    assert resumed["machines"] == ["first machine", "second machine"]
    again = train_lib.train(dataclasses.replace(config, train_steps=9), data=stroke_data)
    assert again["machines"] == ["first machine", "second machine"]


@pytest.mark.slow
def test_convolution_kernels_train_alike_and_a_run_resumes_with_either(make_config, stroke_data):
    native = make_config("native", conv_kernels="native")
    train_lib.train(native, data=stroke_data)
    mixed = make_config("mixed", train_steps=3, conv_kernels="phases")
    train_lib.train(mixed, data=stroke_data)
    resumed = train_lib.train(
        dataclasses.replace(mixed, train_steps=6, conv_kernels="native"), data=stroke_data
    )
    assert resumed["step"] == 6
    for a, b in zip(_final_weights(native), _final_weights(mixed)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "conv_kernels, native_fast, expect_phases",
    [
        ("auto", False, True),
        ("auto", True, False),
        ("phases", True, True),
        ("native", False, False),
    ],
)
def test_conv_kernels_choose_the_layers(
    make_config, monkeypatch, conv_kernels, native_fast, expect_phases
):
    from aur_tf import convolutions

    monkeypatch.setattr(convolutions, "native_kernels_are_fast", lambda: native_fast)
    trainer, _ = train_lib.build_trainer(make_config(conv_kernels=conv_kernels))
    layers = trainer.mask_net.layers + trainer.discriminator.layers
    by_phases = {
        isinstance(layer, (convolutions.PhaseConv2D, convolutions.PhaseConv2DTranspose))
        for layer in layers
        if "conv" in layer.name and layer.name != "score_conv"
    }
    assert by_phases == {expect_phases}


def test_finished_run_is_not_trained_again(make_config, stroke_data):
    config = make_config()
    first = train_lib.train(config, data=stroke_data)
    again = train_lib.train(config, data=stroke_data)
    assert again["step"] == first["step"]
    assert again["psnr_db"] == pytest.approx(first["psnr_db"])
    assert [h["step"] for h in again["history"]] == [3, 6]
    assert [h["train_means"] for h in again["history"]] == [
        h["train_means"] for h in first["history"]
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mask_width": 8}, "--mask_width=4"),
        ({"disc_normalization": "spectral"}, "--disc_normalization=batch"),
    ],
)
def test_resume_with_other_model_settings_is_refused(make_config, stroke_data, change, message):
    config = make_config()
    train_lib.train(config, data=stroke_data)
    with pytest.raises(UserError, match=message):
        train_lib.train(dataclasses.replace(config, **change), data=stroke_data)


def test_a_run_from_before_a_model_setting_existed_resumes_with_its_default(
    make_config, stroke_data
):
    config = make_config(train_steps=3)
    train_lib.train(config, data=stroke_data)
    config_path = os.path.join(config.workdir, "config.json")
    with open(config_path) as f:
        saved = json.load(f)
    del saved["disc_normalization"]
    with open(config_path, "w") as f:
        json.dump(saved, f)
    with pytest.raises(UserError, match="--disc_normalization=batch"):
        train_lib.train(
            dataclasses.replace(config, train_steps=6, disc_normalization="spectral"),
            data=stroke_data,
        )
    assert (
        train_lib.train(dataclasses.replace(config, train_steps=6), data=stroke_data)["step"] == 6
    )


@pytest.mark.parametrize(
    "mode, precision",
    [("unsupervised", "float32"), ("supervised", "float32"), ("unsupervised", "mixed_float16")],
)
@pytest.mark.slow
def test_resume_trains_with_the_learning_rates_of_its_settings(
    make_config, stroke_data, mode, precision, caplog
):
    # Keras checkpoints an optimizer's learning rate as a variable; restoring it must not undo
    # a learning rate changed for the resumed part (e.g. lowered to fine-tune).
    import tensorflow as tf

    caplog.set_level(logging.INFO, logger="aur_tf")
    config = make_config(mode=mode, mixed_precision=precision, train_steps=3)
    train_lib.train(config, data=stroke_data)
    resumed = dataclasses.replace(
        config, train_steps=6, mask_learning_rate=5e-5, disc_learning_rate=2.5e-5
    )
    train_lib.train(resumed, data=stroke_data)
    saved = tf.train.load_checkpoint(os.path.join(config.workdir, "checkpoints"))
    optimizers = {"mask": 5e-5, "disc": 2.5e-5} if mode == "unsupervised" else {"mask": 5e-5}
    # Loss scaling wraps the Adam that holds the learning rate.
    inner = "inner_optimizer/" if precision == "mixed_float16" else ""
    for name, rate in optimizers.items():
        key = f"{name}_optimizer/{inner}_learning_rate/.ATTRIBUTES/VARIABLE_VALUE"
        assert saved.get_tensor(key) == pytest.approx(rate)
        assert f"--{name}_learning_rate={rate:g} replaces the checkpoint's" in caplog.text


def test_unwritable_workdir_is_a_user_error(make_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="--workdir"):
        train_lib.train(make_config(workdir=str(blocker / "run")))


def test_supervised_mode_trains_from_clean_sources(make_config, stroke_data):
    results = train_lib.train(make_config(mode="supervised"), data=stroke_data)
    assert results["step"] == 6 and np.isfinite(results["psnr_db"])


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_runs_train(make_config, stroke_data, precision, caplog):
    caplog.set_level(logging.INFO, logger="aur_tf")
    results = train_lib.train(
        make_config(mixed_precision=precision, train_steps=3), data=stroke_data
    )
    assert np.isfinite(results["psnr_db"])
    # Loss scaling's skipped updates are counted, and shown wherever they can happen.
    assert results["skipped_steps"] >= 0
    shown = rf"step 3/3 .*\| skipped_steps {results['skipped_steps']}$"
    assert any(re.search(shown, record.getMessage()) for record in caplog.records) == (
        precision == "mixed_float16"
    )


def test_divergence_stops_with_the_loss_and_step(make_config, stroke_data):
    nan_data = MixtureDataset(
        MixtureSplit(
            np.full_like(stroke_data.train.mixtures, np.nan),
            stroke_data.train.sources_a,
            stroke_data.train.sources_b,
        ),
        stroke_data.validation,
        stroke_data.test,
    )
    config = make_config()
    with pytest.raises(TrainingDiverged, match="became nan at step 1; no checkpoint"):
        train_lib.train(config, data=nan_data)
    assert not glob.glob(os.path.join(config.workdir, "checkpoints", "ckpt-*"))


def test_the_unsupervised_score_is_on_every_evaluation_unless_turned_off(
    make_config, stroke_data, caplog
):
    caplog.set_level(logging.INFO, logger="aur_tf")
    scored = train_lib.train(make_config("scored"), data=stroke_data)
    assert all(0 < h["remix_consistency_db"] <= 100 for h in scored["history"])
    assert scored["remix_consistency_db"] == scored["history"][-1]["remix_consistency_db"]
    assert any(
        "| remix_consistency_db " in record.getMessage()
        for record in caplog.records
        if record.getMessage().startswith("eval at step")
    )
    unscored = train_lib.train(make_config("unscored", unsupervised_mixtures=0), data=stroke_data)
    assert "remix_consistency_db" not in unscored
    assert all("remix_consistency_db" not in h for h in unscored["history"])


def test_a_workdir_in_use_by_another_run_is_refused_before_anything_is_written(
    make_config, stroke_data
):
    from aur_tf import rundir

    config = make_config()
    os.makedirs(config.workdir)
    with rundir.exclusive(config.workdir, "training run"):
        with pytest.raises(UserError, match="is in use by another training run"):
            train_lib.train(config, data=stroke_data)
    assert os.listdir(config.workdir) == []


def test_the_trainer_takes_the_configured_energy_term_and_margin(make_config):
    model, _ = train_lib.build_trainer(make_config(energy="hinge", energy_margin=0.3))
    # Batch energies split 0.9 : 0.1, an imbalance of 0.8.
    x_tilde = np.full([2, 4, 4, 1], 0.9**0.5, np.float32)
    b_tilde = np.full([2, 4, 4, 1], 0.1**0.5, np.float32)
    assert float(model.energy_loss(x_tilde, b_tilde)) == pytest.approx(
        ((0.8 - 0.3) / 0.7) ** 2, rel=1e-4
    )


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_the_trainer_weighs_the_energy_term_by_its_faded_weight(
    make_config, stroke_data, precision
):
    import tensorflow as tf

    # Eq. 6 as printed is far from 0 on any mask, so its share of the total is easy to see.
    config = make_config(
        energy="pixel", beta_fade_start=2, beta_fade_steps=4, mixed_precision=precision
    )
    model, _ = train_lib.build_trainer(config)
    step = tf.function(model.train_step)
    mixtures = tf.constant(stroke_data.train.mixtures[: 2 * config.batch_pairs])
    # The step counter before a step is the steps trained; the fade ends at step 2 + 4.
    for before, weight in [(0, 5.0), (2, 5.0), (4, 2.5), (6, 0.0), (40, 0.0)]:
        model.step_counter.assign(before)
        model.reset_metrics()
        logs = {name: float(value.numpy().item()) for name, value in step(mixtures).items()}
        assert logs["beta_now"] == pytest.approx(weight)
        assert config.beta * logs["loss_energy"] > 1e-2
        energy_part = logs["loss_total"] - logs["loss_cycle"] - 5.0 * logs["loss_adversarial"]
        assert energy_part == pytest.approx(weight * logs["loss_energy"], abs=1e-5)
    assert step.experimental_get_tracing_count() == 1


def test_without_fading_the_trainer_weighs_the_energy_term_by_beta(make_config, stroke_data):
    import tensorflow as tf

    config = make_config(energy="pixel", beta=3.0, beta_fade_start=2)
    model, _ = train_lib.build_trainer(config)
    model.step_counter.assign(10**6)
    logs = model.train_step(tf.constant(stroke_data.train.mixtures[: 2 * config.batch_pairs]))
    logs = {name: float(value.numpy().item()) for name, value in logs.items()}
    assert "beta_now" not in logs
    energy_part = logs["loss_total"] - logs["loss_cycle"] - 5.0 * logs["loss_adversarial"]
    assert energy_part == pytest.approx(3.0 * logs["loss_energy"], abs=1e-5)


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
@pytest.mark.parametrize("mode", ["unsupervised", "supervised"])
def test_the_trainer_decays_every_learning_rate_by_the_step(
    make_config, stroke_data, mode, precision
):
    import tensorflow as tf

    config = make_config(
        mode=mode,
        mask_learning_rate=4e-4,
        disc_learning_rate=2e-4,
        learning_rate_decay_start=2,
        learning_rate_decay_steps=4,
        mixed_precision=precision,
    )
    model, trackables = train_lib.build_trainer(config)
    step = tf.function(model.train_step)
    count = 2 * config.batch_pairs
    batch = tf.constant(stroke_data.train.mixtures[:count])
    if mode == "supervised":
        batch = (batch, tf.constant(stroke_data.train.sources_a[:count]))
    # The step counter before a step is the steps trained; the decay ends at step 2 + 4.
    for before, fraction in [(0, 1.0), (2, 1.0), (3, 0.75), (5, 0.25), (6, 0.0), (40, 0.0)]:
        model.step_counter.assign(before)
        model.reset_metrics()
        logs = {name: float(value.numpy().item()) for name, value in step(batch).items()}
        assert logs["learning_rate_scale"] == pytest.approx(fraction)
        assert float(trackables["mask_optimizer"].learning_rate) == pytest.approx(4e-4 * fraction)
        if mode == "unsupervised":
            rate = float(trackables["disc_optimizer"].learning_rate)
            assert rate == pytest.approx(2e-4 * fraction)
    assert step.experimental_get_tracing_count() == 1


def test_without_a_decay_the_learning_rates_stay_as_configured(make_config, stroke_data):
    import tensorflow as tf

    config = make_config(mask_learning_rate=4e-4, learning_rate_decay_start=2)
    model, trackables = train_lib.build_trainer(config)
    model.step_counter.assign(10**6)
    logs = model.train_step(tf.constant(stroke_data.train.mixtures[: 2 * config.batch_pairs]))
    assert "learning_rate_scale" not in logs
    assert float(trackables["mask_optimizer"].learning_rate) == pytest.approx(4e-4)


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_the_discriminator_sees_instance_noise_of_the_faded_std(make_config, precision):
    import keras
    import tensorflow as tf

    class InputSpread(keras.Model):
        """D, recording the smallest and largest standard deviation of its inputs."""

        def __init__(self, discriminator):
            super().__init__()
            self.discriminator = discriminator
            self.low = keras.Variable(np.inf, trainable=False)
            self.high = keras.Variable(0.0, trainable=False)

        def call(self, images, training=False):
            spread = tf.math.reduce_std(tf.cast(images, tf.float32))
            self.low.assign(tf.minimum(self.low, spread))
            self.high.assign(tf.maximum(self.high, spread))
            return self.discriminator(images, training=training)

    config = make_config(
        instance_noise=0.4, instance_noise_steps=4, batch_pairs=8, mixed_precision=precision
    )
    model, _ = train_lib.build_trainer(config)
    spread = InputSpread(model.discriminator)
    model.discriminator = spread
    step = tf.function(model.train_step)
    # On blank mixtures every image D sees, mixture or remix, is the noise alone.
    size, channels = config.image_size, config.channels
    blank = tf.zeros([2 * config.batch_pairs, size, size, channels])
    # The step counter before a step is the steps trained; the fade ends at step 4. Step 0 is a
    # discriminator step, so D's update and L_M both see the noise.
    for before, std in [(0, 0.4), (2, 0.2), (3, 0.1), (4, 0.0), (40, 0.0)]:
        model.step_counter.assign(before)
        model.reset_metrics()
        spread.low.assign(np.inf)
        spread.high.assign(0.0)
        logs = {name: float(value.numpy().item()) for name, value in step(blank).items()}
        assert logs["instance_noise_now"] == pytest.approx(std)
        assert float(spread.low) == pytest.approx(std, rel=0.1, abs=1e-6)
        assert float(spread.high) == pytest.approx(std, rel=0.1, abs=1e-6)
    assert step.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("steps", [0, 4])
def test_without_instance_noise_the_discriminator_sees_the_images(make_config, stroke_data, steps):
    import tensorflow as tf

    config = make_config(instance_noise=0.0, instance_noise_steps=steps)
    model, _ = train_lib.build_trainer(config)
    mixtures = tf.constant(stroke_data.train.mixtures[: 2 * config.batch_pairs])
    assert model._disc_input(mixtures, tf.constant(1.0)) is mixtures
    assert "instance_noise_now" not in model.train_step(mixtures)


def test_the_schedules_follow_the_run_step_across_a_resume(make_config, stroke_data, caplog):
    caplog.set_level(logging.INFO, logger="aur_tf")
    config = make_config(
        train_steps=3,
        log_every=1,
        beta_fade_start=1,
        beta_fade_steps=4,
        learning_rate_decay_start=2,
        learning_rate_decay_steps=4,
    )
    train_lib.train(config, data=stroke_data)
    train_lib.train(dataclasses.replace(config, train_steps=6), data=stroke_data)
    progress = [message for message in caplog.messages if re.match(r"step \d+/\d+ \|", message)]

    def logged(name):
        return [float(re.search(rf"{name} (\d+\.\d+)", line).group(1)) for line in progress]

    # The values during steps 1..6 (the step counter 0..5 before each).
    assert logged("beta_now") == pytest.approx([5.0, 5.0, 3.75, 2.5, 1.25, 0.0])
    assert logged("learning_rate_scale") == pytest.approx([1.0, 1.0, 1.0, 0.75, 0.5, 0.25])
    # The restored rate is the schedule's, so the resume does not report it replaced.
    assert not any("replaces the checkpoint's" in message for message in caplog.messages)


def _script_remix_consistency(monkeypatch, values):
    """Makes the remix consistencies computed from now on `values`, in order (dB)."""
    from aur_tf.unsupervised import scores

    calls = iter(values)
    monkeypatch.setattr(scores, "remix_consistency_db", lambda *args, **kwargs: next(calls))


def _weights(workdir, config, prefix):
    from aur_tf import rundir

    return rundir.restore_mask_net(workdir, config, prefix)[0].get_weights()


# Evaluations at steps 2, 4, 6 and 8 of 8: from step 4 on they may be picked; step 2's score,
# however high, is the early phase's and is never picked.
@pytest.mark.parametrize(
    "scripted, selected", [([10, 30, 20, 25], 4), ([20, 10, 30, 25], 6), ([30, 10, 20, 25], 8)]
)
def test_select_unsupervised_keeps_the_best_scored_checkpoint_for_test_and_export(
    make_config, stroke_data, monkeypatch, scripted, selected
):
    from aur_tf import evaluation, rundir

    config = make_config(
        select="unsupervised", train_steps=8, eval_every=2, checkpoint_every=2, keep_checkpoints=9
    )
    _script_remix_consistency(monkeypatch, scripted)
    results = train_lib.train(config, data=stroke_data)
    assert results["step"] == 8
    assert results["selected"]["step"] == selected
    assert results["selected"]["remix_consistency_db"] == max(scripted[1:])
    workdir = config.workdir
    assert sorted(os.listdir(os.path.join(workdir, "selected"))) == [
        "checkpoint",
        f"ckpt-{selected}.data-00000-of-00001",
        f"ckpt-{selected}.index",
    ]
    # The selected net is the one trained to that step, and both test and export take it.
    same_step = os.path.join(workdir, "checkpoints", f"ckpt-{selected}")
    for a, b in zip(_weights(workdir, config, same_step), _weights(workdir, config, None)):
        np.testing.assert_array_equal(a, b)
    net, prefix = rundir.restore_mask_net(workdir, config)
    assert prefix == os.path.join(workdir, "selected", f"ckpt-{selected}")
    assert results["test"]["step"] == selected
    assert results["test"]["psnr_db"] == evaluation.evaluate(net, stroke_data.test)["psnr_db"]
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f)["selected"]["step"] == selected


# The first run (4 steps) selects step 4. Resumed to 8 steps, steps 4 to 8 may be picked: the
# resumed run first re-scores the selected checkpoint (30 dB again). Resumed to 12 steps, steps
# 6 to 12 may be picked: step 4 is not re-scored and gives way to the first later evaluation.
@pytest.mark.parametrize(
    "train_steps, scripted, selected",
    [(8, [30, 20, 25], 4), (8, [30, 20, 40], 8), (12, [20, 25, 10, 5], 8)],
)
def test_a_resumed_run_compares_later_evaluations_with_the_selected_one(
    make_config, stroke_data, monkeypatch, train_steps, scripted, selected
):
    config = make_config(select="unsupervised", train_steps=4, eval_every=2, checkpoint_every=2)
    _script_remix_consistency(monkeypatch, [10, 30])
    train_lib.train(config, data=stroke_data)
    _script_remix_consistency(monkeypatch, scripted)
    resumed = dataclasses.replace(config, train_steps=train_steps)
    results = train_lib.train(resumed, data=stroke_data)
    assert results["selected"]["step"] == results["test"]["step"] == selected
    assert [name for name in os.listdir(os.path.join(config.workdir, "selected"))] != []
    assert len(glob.glob(os.path.join(config.workdir, "selected", "ckpt-*.index"))) == 1


def test_without_select_test_scores_the_final_checkpoint(make_config, stroke_data):
    results = train_lib.train(make_config(), data=stroke_data)
    assert results["test"]["step"] == 6
    assert "selected" not in results
    assert not os.path.exists(os.path.join(make_config().workdir, "selected"))


def test_average_checkpoints_tests_and_exports_the_mean_of_the_newest_checkpoints(
    make_config, stroke_data
):
    from aur_tf import evaluation, rundir

    config = make_config(
        average_checkpoints=3, train_steps=8, eval_every=4, checkpoint_every=2, keep_checkpoints=3
    )
    results = train_lib.train(config, data=stroke_data)
    workdir = config.workdir
    newest = [
        _weights(workdir, config, os.path.join(workdir, "checkpoints", f"ckpt-{s}"))
        for s in (4, 6, 8)
    ]
    net, prefix = rundir.restore_mask_net(workdir, config)
    assert prefix == os.path.join(workdir, "selected", "ckpt-8")
    for averaged, *each in zip(net.get_weights(), *newest):
        np.testing.assert_allclose(averaged, np.mean(each, axis=0), rtol=1e-6, atol=1e-7)
    assert not np.array_equal(net.get_weights()[0], newest[-1][0])
    assert results["test"]["averaged_steps"] == results["selected"]["averaged_steps"] == [4, 6, 8]
    assert results["test"]["psnr_db"] == evaluation.evaluate(net, stroke_data.test)["psnr_db"]
    assert (
        results["selected"]["psnr_db"]
        == evaluation.evaluate(net, stroke_data.validation)["psnr_db"]
    )
    # The record's top level stays the final checkpoint's evaluation, as in its history.
    assert results["psnr_db"] == results["history"][-1]["psnr_db"] != results["selected"]["psnr_db"]
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f)["selected"]["averaged_steps"] == [4, 6, 8]
    # The report's figure shows the average's estimates.
    mixtures = stroke_data.validation.mixtures[: rundir.SAMPLE_COUNT]
    estimates = 2 * mixtures * evaluation.predict_masks(net, mixtures)
    with np.load(os.path.join(workdir, "samples.npz")) as samples:
        permuted = tuple(results["selected"]["permutation"]) != (0, 1)
        key = "estimates_b" if permuted else "estimates_a"
        np.testing.assert_allclose(samples[key], estimates, rtol=1e-5, atol=1e-6)


def test_an_averaged_run_trained_on_replaces_its_average(make_config, stroke_data, monkeypatch):
    from aur_tf import callbacks, rundir

    config = make_config(average_checkpoints=2, train_steps=4, eval_every=2, checkpoint_every=2)
    train_lib.train(config, data=stroke_data)
    fit = train_lib._fit
    stale_during_training = []

    def fit_and_look(*args):
        stale_during_training.append(rundir.selected_checkpoint(config.workdir))
        return fit(*args)

    monkeypatch.setattr(train_lib, "_fit", fit_and_look)
    saved = []
    save_selected = callbacks.save_selected
    monkeypatch.setattr(
        callbacks, "save_selected", lambda *args: saved.append(args[-1]) or save_selected(*args)
    )
    results = train_lib.train(dataclasses.replace(config, train_steps=8), data=stroke_data)
    assert stale_during_training == [None]
    assert saved == [8]
    assert results["test"]["averaged_steps"] == [6, 8]
