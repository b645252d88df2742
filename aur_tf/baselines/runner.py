"""`run_baseline(method, config)`: a baseline on the mask net's data, scored and saved the same way.

A baseline's workdir (`aur_tf.rundir`) holds
  eval.json     the validation scores under the fields train_lib writes where they apply (psnr_db,
                ssim, per source, permutation, energy_share, swapped_fraction, collapsed,
                half_mask_*, split, test, step, train_seconds, config, machines), plus method,
                method_settings, method_details and test_seconds (the time to separate the
                validation mixtures)
  samples.npz   the first validation mixtures and their estimates, for `aur_tf.report` figures
  unsupervised_scores.json
                the scores of mixtures alone (`aur_tf.unsupervised`) of the method's separation
                of the first validation mixtures (`runs.MIXTURES`, or all if fewer), in the
                format a training run's file has, with one entry at the record's `step`
"""

import dataclasses
import logging
import os
import time

import keras
import numpy as np

from aur_tf import evaluation, machine, metrics, rundir
from aur_tf.baselines import METHODS, glo, rpca
from aur_tf.config import DATA_SETTINGS, MIN_SCORED_MIXTURES
from aur_tf.data.mixtures import load_mixture_dataset
from aur_tf.errors import UserError
from aur_tf.unsupervised import runs as unsupervised_runs
from aur_tf.unsupervised import scores as unsupervised_scores

log = logging.getLogger("aur_tf")

# The Config fields a baseline reads; only these go into its eval.json, so that settings of the
# mask net it never used cannot make two runs of one baseline look different in a report.
DATA_FIELDS = ("workdir", "cache_dir", *DATA_SETTINGS)


def _check_method(method):
    """UserError unless `method` is one of `METHODS`."""
    if method not in METHODS:
        raise UserError(f"--method={method} is not one of: {', '.join(METHODS)}")


def _check_workdir(workdir, method):
    """Creates `workdir`; refuses one that holds a mask-net run or another method's results."""
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create --workdir={workdir} ({e.strerror}): choose a writable directory"
        ) from None
    if os.path.exists(rundir.path(workdir, rundir.CHECKPOINTS_DIR)):
        raise UserError(
            f"--workdir={workdir} holds a mask-net training run: give the baseline "
            "a directory of its own"
        )
    record = rundir.read_record(
        rundir.path(workdir, rundir.EVAL_FILE), "give the baseline a directory of its own"
    )
    if record is not None:
        previous = record.get("method")
        if previous != method:
            raise UserError(
                f"--workdir={workdir} holds results of {previous or 'another run'}: "
                f"give --method={method} a directory of its own"
            )


def _separate(method, mixtures, rpca_settings, glo_model, seed):
    """The method's two estimates `[N, H, W, C]` of `mixtures` and its per-call details."""
    if method == "identity":  # M = 1: everything in one output, x_hat = 2y, b_hat = 0
        return (*metrics.estimates_from_mask(mixtures, np.ones_like(mixtures)), {})
    if method == "half_mask":  # M = 1/2: both outputs are the mixture
        return (*metrics.estimates_from_mask(mixtures, np.full_like(mixtures, 0.5)), {})
    if method == "rpca":
        low_rank, sparse, iterations = rpca.separate(mixtures, rpca_settings)
        return low_rank, sparse, {"iterations": iterations}
    # Held-out codes get their own seed so they never start where a training code did.
    estimates_a, estimates_b, losses = glo_model.separate(mixtures, seed + 1)
    return estimates_a, estimates_b, {"l1": losses}


def separation(method, rpca_settings=rpca.RpcaSettings(), glo_model=None, seed=0):
    """The method as a separation of `aur_tf.unsupervised.scores`: `[N, H, W, C]` float32
    mixtures in [0, 1] -> `(x~, b~)`, `_separate`'s clean-scale estimates halved to the mixture
    scale, float32. They sum to the mixtures for identity and half_mask, up to RPCA's tolerance
    for rpca and up to GLO's reconstruction error for glo (`glo_model`, a trained `glo.Glo`).
    """
    _check_method(method)

    def separate(mixtures):
        estimate_0, estimate_1, _ = _separate(method, mixtures, rpca_settings, glo_model, seed)
        return tuple((np.asarray(e) / 2).astype(np.float32) for e in (estimate_0, estimate_1))

    return separate


def _score(method, split, rpca_settings, glo_model, seed):
    """Separates one held-out `MixtureSplit`: (scores with its half mask, estimates, details,
    seconds)."""
    start = time.monotonic()
    estimate_0, estimate_1, details = _separate(
        method, split.mixtures, rpca_settings, glo_model, seed
    )
    scores = dict(
        evaluation.score_estimates(split, estimate_0, estimate_1),
        **evaluation.half_mask_baseline(split),
    )
    return scores, (estimate_0, estimate_1), details, time.monotonic() - start


def run_baseline(
    method,
    config,
    rpca_settings=rpca.RpcaSettings(),
    glo_settings=glo.GloSettings(),
    data=None,
    judge=unsupervised_scores.JudgeSettings(),
):
    """Runs one baseline on `config`'s validation and test mixtures and writes its workdir.

    Args:
      method: one of `METHODS`.
      config: a `Config`; only its `DATA_FIELDS` are used.
      rpca_settings: used when `method` is "rpca".
      glo_settings: used when `method` is "glo".
      data: a `MixtureDataset`; loaded from the config when None. GLO trains on
        `data.train.mixtures`; the other methods see only the held-out mixtures.
      judge: settings of the judge of the unsupervised scores (`unsupervised_scores.json`).

    Returns:
      The dict written to `WORKDIR/eval.json`.
    """
    _check_method(method)
    _check_workdir(config.workdir, method)
    if data is None:
        data = load_mixture_dataset(config)
    if len(data.validation.mixtures) < MIN_SCORED_MIXTURES:
        raise UserError(
            f"--validation_mixtures={len(data.validation.mixtures)}: a baseline's unsupervised "
            f"scores need at least {MIN_SCORED_MIXTURES} validation mixtures"
        )
    glo_model, train_seconds, train_losses = None, 0.0, None
    if method == "glo":
        keras.utils.set_random_seed(config.seed)
        glo_model = glo.Glo(
            glo_settings, data.train.mixtures.shape[1], data.train.mixtures.shape[3]
        )
        start = time.monotonic()
        train_losses = glo_model.fit(data.train.mixtures, config.seed)
        train_seconds = time.monotonic() - start
    scores, estimates, details, test_seconds = _score(
        method, data.validation, rpca_settings, glo_model, config.seed
    )
    test_scores, _, test_details, _ = _score(
        method, data.test, rpca_settings, glo_model, config.seed
    )
    step = glo_settings.glo_train_steps if glo_model else 0
    # The scores of mixtures alone see the first validation mixtures, none of their sources.
    held_out = data.validation.mixtures[: unsupervised_runs.MIXTURES]
    unsupervised = unsupervised_runs.score_separation(
        step,
        separation(method, rpca_settings, glo_model, config.seed),
        held_out,
        judge,
        log=lambda line: log.info("%s, unsupervised scores at %s", method, line),
    )
    if train_losses is not None:
        details = {
            "train_l1": train_losses,
            "validation_l1": details["l1"],
            "test_l1": test_details["l1"],
        }
    settings = {"rpca": rpca_settings, "glo": glo_settings}.get(method)
    results = dict(
        scores,
        method=method,
        split="validation",
        test=test_scores,
        method_settings=dataclasses.asdict(settings) if settings else {},
        method_details=details,
        step=step,
        train_seconds=train_seconds,
        test_seconds=test_seconds,
        config={k: getattr(config, k) for k in DATA_FIELDS},
        machines=[machine.describe()],
    )
    rundir.write_json(rundir.path(config.workdir, rundir.EVAL_FILE), results)
    rundir.write_samples(config.workdir, data.validation, *estimates, scores["permutation"])
    unsupervised_runs.write_scores(
        config.workdir,
        unsupervised_runs.settings_of(unsupervised_runs.MIXTURES, judge),
        {step: unsupervised},
    )
    log.info(
        "%s on %d validation mixtures: %.2f dB PSNR, %.3f SSIM (half mask %.2f dB, %.3f); "
        "test %.2f dB, %.3f; %.0f s training, %.0f s separating the validation mixtures",
        method,
        len(data.validation.mixtures),
        results["psnr_db"],
        results["ssim"],
        results["half_mask_psnr_db"],
        results["half_mask_ssim"],
        test_scores["psnr_db"],
        test_scores["ssim"],
        train_seconds,
        test_seconds,
    )
    return results
