"""The one frozen configuration object the library takes.

`main.py` turns absl flags into a `Config`; everything under `aur_tf/` reads settings only
from it, never from FLAGS, so the library can be driven from Python or tests directly.
"""

import dataclasses
import json
import math
import os

from aur_tf.errors import UserError
from aur_tf.safe_io import printable

MODES = ("unsupervised", "supervised")
ENERGY_TERMS = ("batch", "hinge", "pixel", "none")
# Settings of the adversarial game alone: a supervised run trains the mask net by itself.
# Settings that fix a run's data: its sources, their shape, the mixture counts and the draw.
DATA_SETTINGS = (
    "source_a",
    "source_b",
    "image_size",
    "channels",
    "invert",
    "train_mixtures",
    "validation_mixtures",
    "test_mixtures",
    "seed",
)
ADVERSARIAL_SETTINGS = frozenset(
    {
        "disc_width",
        "disc_learning_rate",
        "alpha",
        "beta",
        "energy",
        "energy_margin",
        "beta_fade_start",
        "beta_fade_steps",
        "mask_steps_per_disc_step",
        "instance_noise",
        "instance_noise_steps",
        "disc_normalization",
    }
)
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
IMAGE_SIZES = (32, 64)
CHANNEL_COUNTS = (1, 3)
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
CONV_KERNELS = ("auto", "phases", "native")
SELECTIONS = ("last", "unsupervised")
DISC_NORMALIZATIONS = ("batch", "spectral")
# The fewest held-out mixtures the unsupervised scores (`aur_tf.unsupervised`) take: the judge
# trains on one half and tests on the other, and each half needs a partner for every mixture.
MIN_SCORED_MIXTURES = 4
# NumPy's legacy seeding, which Keras seeds too, takes 32-bit seeds only.
MAX_SEED = 2**32 - 1
# The largest value of any count or width. Far beyond any sane run (a billion steps take years at
# the fastest rates measured), it keeps every count clear of 32-bit overflow in tensor shapes
# (2 * batch_pairs mixtures per step), of the step ETA's timestamps and of float rounding; what
# actually fits is checked against the machine's memory (aur_tf.memory) before training.
MAX_COUNT = 10**9
# Fields that must be integers in 1 .. MAX_COUNT.
COUNT_FIELDS = (
    "train_mixtures",
    "validation_mixtures",
    "test_mixtures",
    "train_steps",
    "batch_pairs",
    "mask_width",
    "disc_width",
    "mask_steps_per_disc_step",
    "checkpoint_every",
    "keep_checkpoints",
    "eval_every",
    "log_every",
    "collapse_windows",
    "trials",
    "trial_rounds",
    "average_checkpoints",
)


def _default_cache_dir():
    return os.environ.get("AUR_TF_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "aur_tf"))


def setting(default, help_text):
    """A settings field with its command-line help, so flags are generated from one definition.

    Any frozen dataclass built from these fields (Config, the baselines' settings) gets its
    command-line flags from `aur_tf.cli.define_flags`.
    """
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a training run; defaults are the paper's MNIST setup (Sec. 4-5), the
    settings of configs/mnist_paper.cfg."""

    workdir: str = setting(
        "runs/mnist_paper",
        "Directory for checkpoints, TensorBoard logs and "
        "eval.json; running again with the same workdir resumes.",
    )
    mode: str = setting(
        "unsupervised",
        "unsupervised (the paper's method, mixtures only) or "
        "supervised (upper bound: the same mask net trained on clean sources).",
    )
    # Data: two clean-image sources, mixed as y = (x + b) / 2.
    source_a: str = setting(
        "mnist?labels=0-4",
        "First source, KIND:LOCATION[?labels=L] with KIND "
        "tfds, npz, folder or mnist (built-in offline MNIST).",
    )
    source_b: str = setting("mnist?labels=5-9", "Second source, same syntax as --source_a.")
    image_size: int = setting(
        32,
        "Height and width of the mixtures: 32 or 64 (smaller images are "
        "zero-padded, larger ones resized).",
    )
    channels: int = setting(1, "1 (grayscale) or 3 (RGB).")
    invert: bool = setting(
        False,
        "Use 1 - image, so that backgrounds are 0 (the paper does this "
        "for Shoes and Bags: masking works best on a zero background).",
    )
    train_mixtures: int = setting(25_000, "Number of training mixtures.")
    validation_mixtures: int = setting(
        5_000,
        "Number of validation mixtures: every evaluation "
        "during training, and every choice made by score.",
    )
    test_mixtures: int = setting(
        5_000, "Number of test mixtures, scored once at the end of training."
    )
    cache_dir: str = setting(
        _default_cache_dir(),
        "Where downloaded and decoded datasets are kept "
        "(default: $AUR_TF_CACHE or ~/.cache/aur_tf).",
    )
    seed: int = setting(
        0, f"Seed of the mixtures, the pairing, and the initial weights (0 .. {MAX_SEED})."
    )
    deterministic: bool = setting(
        False,
        "Make TensorFlow ops deterministic, so that two runs "
        "with the same seed give identical losses and weights (slower "
        "on GPUs).",
    )
    # Models (Sec. 4).
    mask_width: int = setting(
        64, "Mask net channels at the layer before last; doubling toward the bottleneck."
    )
    disc_width: int = setting(64, "Discriminator channels at its first layer.")
    disc_normalization: str = setting(
        "batch",
        "batch (DC-GAN's BatchNorm, the paper's) or spectral (every convolution of the "
        "discriminator spectrally normalised, no BatchNorm).",
    )
    # Optimisation (Eq. 10 and Sec. 4).
    train_steps: int = setting(25_000, "Total mask-net steps.")
    batch_pairs: int = setting(
        32, "Pairs (y1, y2) per step; each step reads twice as many mixtures."
    )
    mask_learning_rate: float = setting(1e-4, "Adam learning rate of the mask net.")
    disc_learning_rate: float = setting(1e-4, "Adam learning rate of the discriminator.")
    adam_beta1: float = setting(0.9, "Adam beta_1 of both optimizers.")
    learning_rate_decay_start: int = setting(
        0,
        "Steps trained at the full learning rates before they decay (with "
        "--learning_rate_decay_steps > 0).",
    )
    learning_rate_decay_steps: int = setting(
        0,
        "Steps over which both learning rates fall linearly to 0, after "
        "--learning_rate_decay_start; 0 after them. 0: constant learning rates.",
    )
    alpha: float = setting(5.0, "Weight of the adversarial loss L_M (Eq. 10).")
    beta: float = setting(5.0, "Weight of the energy-equity loss L_E (Eq. 10).")
    energy: str = setting(
        "batch",
        "Energy-equity term: batch (batch-level equity, default), hinge (batch-level, free "
        "within --energy_margin of equal energy), pixel (Eq. 6 as printed; collapses on MNIST) "
        "or none (ablation).",
    )
    energy_margin: float = setting(
        0.5,
        "--energy=hinge's dead zone: the energy imbalance |E_x - E_b| / (E_x + E_b) in [0, 1) "
        "that costs nothing (0.5: each output may carry 25% to 75% of the energy).",
    )
    beta_fade_start: int = setting(
        0, "Steps trained at the full --beta before it fades (with --beta_fade_steps > 0)."
    )
    beta_fade_steps: int = setting(
        0,
        "Steps over which the weight of L_E falls linearly from --beta to 0, after "
        "--beta_fade_start; 0 after them. 0: no fading, --beta throughout.",
    )
    mask_steps_per_disc_step: int = setting(4, "Mask-net updates per discriminator update.")
    instance_noise: float = setting(
        0.0,
        "Standard deviation of the Gaussian noise added to every image the discriminator sees, "
        "mixtures and remixes alike, in the images' [0, 1] units. 0: none (the paper's).",
    )
    instance_noise_steps: int = setting(
        0,
        "Steps over which --instance_noise falls linearly to 0; 0 after them. 0: no fading, "
        "--instance_noise throughout.",
    )
    mixed_precision: str = setting(
        "float32", "float32, mixed_float16 (GPUs; with dynamic loss scaling) or mixed_bfloat16."
    )
    jit_compile: bool = setting(False, "Compile the train step with XLA.")
    conv_kernels: str = setting(
        "auto",
        "How the nets' 4x4 stride-2 layers compute transposed "
        "convolutions: phases (four stride-1 convolutions each; several "
        "times faster on AVX2 CPUs), native (TensorFlow's own kernel) or "
        "auto (native with a GPU or an AVX-512 CPU, phases otherwise). "
        "The weights and results are the same.",
    )
    strategy: str = setting(
        "default",
        "tf.distribute strategy: default (one device), mirrored "
        "(every local GPU, else every logical CPU), multi_worker (one process "
        "per machine, cluster from $TF_CONFIG) or tpu (untested). "
        "--batch_pairs is the global batch and must divide by the number of "
        "replicas.",
    )
    # Bookkeeping.
    checkpoint_every: int = setting(500, "Steps between checkpoints.")
    keep_checkpoints: int = setting(3, "Checkpoints kept on disk.")
    eval_every: int = setting(1000, "Steps between evaluations on the validation mixtures.")
    log_every: int = setting(50, "Steps between progress lines and TensorBoard scalars.")
    collapse_windows: int = setting(
        10,
        "Consecutive progress windows whose mean training "
        "energy_share is outside [0.05, 0.95] that are reported as a "
        "collapse to the trivial mask (collapse_detected_at_step in "
        "eval.json).",
    )
    select: str = setting(
        "last",
        "The checkpoint that the test scoring and export take: last (the final one) or "
        "unsupervised (of the evaluations from half of --train_steps on, the one with the "
        "highest remix consistency, a score of mixtures alone, kept in WORKDIR/selected/; needs "
        "--unsupervised_mixtures >= 2).",
    )
    average_checkpoints: int = setting(
        1,
        "The mask net that the test scoring and export take is the mean of the weights of the "
        "run's newest N checkpoints (--checkpoint_every steps apart, BatchNorm statistics "
        "included), computed once training ends and kept in WORKDIR/selected/; 1: the final "
        "checkpoint. Needs --keep_checkpoints >= N and --select=last.",
    )
    unsupervised_mixtures: int = setting(
        1000,
        "Validation mixtures on which every evaluation also computes the remix consistency, a "
        "score that reads mixtures only (docs/unsupervised-score.md); 0 leaves it out.",
    )
    # Seed trials (aur_tf.trials).
    trials: int = setting(
        1,
        "Seeds trained --trial_steps steps each before the one with the highest combined score "
        "(remix consistency less 20 dB per unit of judge AUC above 0.5, both from validation "
        "mixtures alone) is trained on to --train_steps (docs/unsupervised-score.md); 1: no "
        "trials.",
    )
    trial_steps: int = setting(
        0, "Steps each seed trial trains before they are compared; needed with --trials > 1."
    )
    trial_rounds: int = setting(
        1,
        "Most rounds of --trials fresh seeds: another starts while no trial has reached "
        "--trial_min_score_db.",
    )
    trial_min_score_db: float = setting(
        0.0,
        "Combined score (dB, see --trials) a trial must reach for no further round of seed "
        "trials to start; 0: one round.",
    )

    def __post_init__(self):
        self._check_choice("mode", MODES)
        self._check_choice("energy", ENERGY_TERMS)
        self._check_choice("mixed_precision", PRECISIONS)
        self._check_choice("image_size", IMAGE_SIZES)
        self._check_choice("channels", CHANNEL_COUNTS)
        self._check_choice("strategy", STRATEGIES)
        self._check_choice("conv_kernels", CONV_KERNELS)
        self._check_choice("select", SELECTIONS)
        self._check_choice("disc_normalization", DISC_NORMALIZATIONS)
        for name in COUNT_FIELDS:
            if getattr(self, name) < 1:
                raise UserError(f"--{name}={getattr(self, name)} must be a positive integer")
            if getattr(self, name) > MAX_COUNT:
                raise UserError(
                    f"--{name}={getattr(self, name)} is absurdly large: at most {MAX_COUNT}"
                )
        if not 0 <= self.unsupervised_mixtures <= MAX_COUNT:
            raise UserError(
                f"--unsupervised_mixtures={self.unsupervised_mixtures} must be in 0 .. {MAX_COUNT}"
            )
        if self.select == "unsupervised" and self.unsupervised_mixtures < 2:
            raise UserError(
                f"--select=unsupervised scores evaluations by their remix consistency, which "
                f"--unsupervised_mixtures={self.unsupervised_mixtures} turns off: give at least 2"
            )
        if self.average_checkpoints > 1:
            self._check_averaging()
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"--seed={self.seed} must be in 0 .. {MAX_SEED}")
        self._check_trials()
        # NaN passes every comparison below unnoticed and would only surface as a NaN loss.
        for name in ("mask_learning_rate", "disc_learning_rate"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise UserError(f"--{name}={getattr(self, name)} must be finite and > 0")
        if not 0 <= self.adam_beta1 < 1:
            raise UserError(f"--adam_beta1={self.adam_beta1} must be in [0, 1)")
        if not 0 <= self.energy_margin < 1:
            raise UserError(f"--energy_margin={self.energy_margin} must be in [0, 1)")
        for name in ("alpha", "beta", "instance_noise"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise UserError(f"--{name}={getattr(self, name)} must be finite and >= 0")
        # A fade of --beta=0 or of --energy=none is allowed: it changes nothing, and refusing it
        # would keep a flagfile that fades from being run with those ablations.
        for name in (
            "beta_fade_start",
            "beta_fade_steps",
            "learning_rate_decay_start",
            "learning_rate_decay_steps",
            "instance_noise_steps",
        ):
            if not 0 <= getattr(self, name) <= MAX_COUNT:
                raise UserError(f"--{name}={getattr(self, name)} must be in 0 .. {MAX_COUNT}")
        if 2 * self.batch_pairs > self.train_mixtures:
            raise UserError(
                f"--batch_pairs={self.batch_pairs} needs {2 * self.batch_pairs} mixtures per step "
                f"but --train_mixtures={self.train_mixtures}: lower --batch_pairs or raise "
                "--train_mixtures"
            )
        if not self.workdir:
            raise UserError("--workdir is empty: give the directory for checkpoints and results")
        for name in ("workdir", "cache_dir"):
            if "\0" in getattr(self, name):
                raise UserError(
                    f"--{name}={printable(getattr(self, name))} contains a NUL character: remove it"
                )
        # TensorFlow's file system layer (checkpoints, TensorBoard) takes paths as UTF-8 text;
        # Python keeps undecodable bytes of a name as lone surrogates, which it cannot encode.
        try:
            self.workdir.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(
                f"--workdir={printable(self.workdir)} is not valid UTF-8, which "
                "TensorFlow needs for checkpoint paths: rename it"
            ) from None

    def _check_averaging(self):
        """Refuses `--average_checkpoints` settings that cannot be carried out."""
        n = self.average_checkpoints
        if self.select != "last":
            raise UserError(
                f"--average_checkpoints={n} averages the newest checkpoints and "
                f"--select={self.select} picks one: give one of them"
            )
        if self.keep_checkpoints < n:
            raise UserError(
                f"--average_checkpoints={n} averages the newest {n} checkpoints but "
                f"--keep_checkpoints={self.keep_checkpoints} keeps fewer: raise it to {n}"
            )

    def _check_trials(self):
        """Refuses seed-trial settings (`aur_tf.trials`) that cannot be carried out."""
        if not 0 <= self.trial_steps <= MAX_COUNT:
            raise UserError(f"--trial_steps={self.trial_steps} must be in 0 .. {MAX_COUNT}")
        if not (math.isfinite(self.trial_min_score_db) and self.trial_min_score_db >= 0):
            raise UserError(
                f"--trial_min_score_db={self.trial_min_score_db} must be finite and >= 0"
            )
        if self.trials == 1:
            return
        if not 1 <= self.trial_steps <= self.train_steps:
            raise UserError(
                f"--trials={self.trials} needs --trial_steps in 1 .. --train_steps="
                f"{self.train_steps}, the steps each trial trains (now {self.trial_steps})"
            )
        if self.mode != "unsupervised":
            raise UserError(
                f"--trials={self.trials} compares seeds by an unsupervised score: it needs "
                "--mode=unsupervised"
            )
        if self.strategy == "multi_worker":
            raise UserError(f"--trials={self.trials} runs on one machine: use another --strategy")
        if min(self.unsupervised_mixtures, self.validation_mixtures) < MIN_SCORED_MIXTURES:
            raise UserError(
                f"--trials={self.trials} compares seeds by their remix consistency and judge AUC, "
                f"which need --unsupervised_mixtures and --validation_mixtures of at least "
                f"{MIN_SCORED_MIXTURES}"
            )
        last_seed = self.seed + self.trials * self.trial_rounds - 1
        if last_seed > MAX_SEED:
            raise UserError(
                f"--seed={self.seed} --trials={self.trials} --trial_rounds={self.trial_rounds} "
                f"would use seeds up to {last_seed}, past {MAX_SEED}: lower them"
            )

    def _check_choice(self, name, choices):
        if getattr(self, name) not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise UserError(f"--{name}={getattr(self, name)} is not one of: {allowed}")

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
