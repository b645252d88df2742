"""Results of finished runs side by side: a Markdown table beside the paper's and a Fig. 2 image.

A run is a workdir with an `eval.json` (from `train_lib.train` or `aur_tf.baselines`). Runs are
grouped by method (a baseline's `method`, else the mask net's `mode`) plus every setting that
differs between runs of that method, except seeds, bookkeeping and the adversarial settings that
supervised runs ignore; a group with several seeds shows mean ± sample standard deviation. A group
is named by its runs' directory, less a `_seedN` suffix (`runs/mnist_fast_seed1` -> `mnist_fast`),
and its distinguishing settings are listed under the table. The figure shows the first validation
mixtures of each group's first run, from its `samples.npz`, laid out like the paper's Fig. 2.
Runs on different data (another pair of sources) get a section each, with its own table and
figure: the paper's MNIST first, then the others by name.
With `copy_runs`, the report also keeps each run's `eval.json` and `samples.npz` under
OUT/runs/, so that it can be regenerated from OUT alone where the workdirs (and
their checkpoints) are not.
"""

import dataclasses
import glob
import json
import logging
import os
import re
import shutil

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aur_tf import rundir
from aur_tf.config import ADVERSARIAL_SETTINGS, Config
from aur_tf.errors import UserError
from aur_tf.evaluation import (
    QUALITY_MARK_UNITS,
    QUALITY_MARKS,
    quality_mark_key,
    seconds_to_quality_marks,
)
from aur_tf.rundir import EVAL_FILE, SAMPLES_FILE

log = logging.getLogger("aur_tf")

TABLE_FILE = "results.md"
FIGURE_FILE = "separations.png"
# The README's figure where it shows fewer groups than the report (`readme_runs`).
README_FIGURE_FILE = "readme_separations.png"
RUNS_DIR = "runs"  # under OUT, the copied run records (`copy_runs`)
# The lines of a Markdown file (the README) between which `readme` puts the table and the figure.
README_BEGIN = "<!-- python -m aur_tf.report --readme: table and figure from here -->"
README_END = "<!-- python -m aur_tf.report --readme: to here -->"
_RUN_RECORD = (EVAL_FILE, SAMPLES_FILE)
# Table 1 (PSNR, dB) and Table 2 (SSIM) of the paper, MNIST digits 0-4 vs 5-9.
PAPER_MNIST = {
    "rpca": (11.5, 0.36),
    "glo": (13.0, 0.74),
    "unsupervised": (20.4, 0.90),
    "supervised": (24.4, 0.96),
}
_PAPER_MNIST_SOURCES = {"mnist?labels=0-4", "mnist?labels=5-9"}
# Table rows come in this order; methods not listed follow alphabetically.
_METHOD_ORDER = ("identity", "half_mask", "rpca", "glo", "unsupervised", "supervised")
# Settings that never make two runs different methods: seeds, where or how often things are
# written or scored from mixtures alone, and which kernels compute the same convolutions.
_NOT_DISTINGUISHING = {
    "workdir",
    "cache_dir",
    "seed",
    "eval_every",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "conv_kernels",
    "unsupervised_mixtures",
}
# Mask-net settings added after runs were recorded, whose defaults are what those runs did.
_BEFORE_THEY_EXISTED = {
    field.name: field.default
    for field in dataclasses.fields(Config)
    if field.name
    in {
        "energy_margin",
        "beta_fade_start",
        "beta_fade_steps",
        "select",
        "trials",
        "trial_steps",
        "trial_rounds",
        "trial_min_score_db",
        "average_checkpoints",
        "learning_rate_decay_start",
        "learning_rate_decay_steps",
        "instance_noise",
        "instance_noise_steps",
        "disc_normalization",
    }
}
_FIGURE_SCALE = 3  # pixels per image pixel, so 32x32 digits are readable
_GAP = 4
_FONT_SIZE = 10
_LINE_HEIGHT = 12


@dataclasses.dataclass(frozen=True)
class Run:
    """One workdir's `eval.json` (`results`)."""

    workdir: str
    results: dict

    @property
    def method(self):
        return self.results.get("method") or self.results["config"]["mode"]

    @property
    def settings(self):
        """Every setting that could tell two runs of one method apart."""
        implicit = {} if "method" in self.results else _BEFORE_THEY_EXISTED
        merged = {**implicit, **self.results["config"], **self.results.get("method_settings", {})}
        return {k: v for k, v in merged.items() if k not in _NOT_DISTINGUISHING | self.unused}

    @property
    def unused(self):
        """Settings of the config that this run's method ignores."""
        unused = ADVERSARIAL_SETTINGS if self.method == "supervised" else frozenset()
        config = self.results["config"]
        if config.get("energy") != "hinge":
            unused |= {"energy_margin"}
        for start, steps in [
            ("beta_fade_start", "beta_fade_steps"),
            ("learning_rate_decay_start", "learning_rate_decay_steps"),
        ]:
            if not config.get(steps, _BEFORE_THEY_EXISTED[steps]):
                unused |= {start}
        if not config.get("instance_noise", _BEFORE_THEY_EXISTED["instance_noise"]):
            unused |= {"instance_noise_steps"}
        return unused

    @property
    def seed(self):
        return self.results["config"]["seed"]

    @property
    def unfinished(self):
        """A mask-net run whose last evaluation came before its last training step."""
        planned = self.results["config"].get("train_steps")
        return (
            "method" not in self.results and planned is not None and self.results["step"] < planned
        )


@dataclasses.dataclass(frozen=True)
class Group:
    """Runs of one method with equal settings (seeds aside), sorted by seed.

    name: the short name of the rows and figure columns (see the module docstring).
    settings: the settings that tell it from other groups of its method, as `k=v, ...` text.
    """

    name: str
    method: str
    runs: tuple
    settings: str = ""


def find_runs(patterns):
    """Runs in the directories matching each glob pattern, in sorted order.

    Args:
      patterns: directory paths or glob patterns (`runs/glo_seed*`).

    Raises:
      UserError: a pattern matches no directory with an eval.json, or an eval.json is unreadable
        or does not fit the schema (`rundir.invalid_field`).
    """
    runs = []
    for pattern in patterns:
        workdirs = [
            d for d in sorted(glob.glob(pattern)) if os.path.isfile(rundir.path(d, EVAL_FILE))
        ]
        if not workdirs:
            raise UserError(f"--runs: '{pattern}' matches no directory with an eval.json")
        runs += [
            Run(workdir, rundir.read_record(rundir.path(workdir, EVAL_FILE)))
            for workdir in workdirs
        ]
    return runs


def _method_rank(method):
    return (
        (_METHOD_ORDER.index(method), "")
        if method in _METHOD_ORDER
        else (len(_METHOD_ORDER), method)
    )


def _format_setting(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def group_runs(runs):
    """Groups runs by method and the settings that vary between that method's runs.

    Returns:
      `Group`s in table order, each named by its first run's directory less a `_seedN` suffix;
      where two groups would share a name, their settings follow it in parentheses.
    """
    by_method = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    groups = []
    for method in sorted(by_method, key=_method_rank):
        method_runs = by_method[method]
        keys = sorted({k for run in method_runs for k in run.settings})
        varying = [
            k for k in keys if len({json.dumps(run.settings.get(k)) for run in method_runs}) > 1
        ]
        by_settings = {}
        for run in method_runs:
            # A setting added after a run was recorded is unrecorded there, not None.
            label = ", ".join(
                f"{k}={_format_setting(run.settings[k])}"
                if k in run.settings
                else f"{k} unrecorded"
                for k in varying
                if k not in run.unused
            )
            by_settings.setdefault(label, []).append(run)
        for label in sorted(by_settings):
            members = tuple(sorted(by_settings[label], key=lambda r: (r.seed, r.workdir)))
            groups.append(Group(_short_name(members[0]), method, members, label))
    names = [group.name for group in groups]
    return [
        dataclasses.replace(group, name=f"{group.name} ({group.settings})")
        if names.count(group.name) > 1 and group.settings
        else group
        for group in groups
    ]


def _short_name(run):
    """The run's directory name less a `_seedN` suffix."""
    return re.sub(r"_seed\d+$", "", os.path.basename(os.path.normpath(run.workdir)))


def _mean_std(values, digits):
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _duration(seconds):
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 60 else f"{minutes / 60:.1f} h"


def _is_paper_mnist(run):
    config = run.results["config"]
    sources = {config[k].removeprefix("tfds:") for k in ("source_a", "source_b")}
    return sources == _PAPER_MNIST_SOURCES


def _steps(group):
    cells = []
    for run in group.runs:
        cells.append(
            f"{run.results['step']} of {run.results['config']['train_steps']} (unfinished)"
            if run.unfinished
            else str(run.results["step"])
        )
    return ", ".join(dict.fromkeys(cells))


def _time_to_quality(group):
    """Minutes of training until each validation metric first reached each quality mark, over
    the seeds.

    Read from each run's evaluation history, so runs written before a mark was added have it too.
    `—` for methods without a history (baselines); `not reached` where no seed did; a mark only
    some seeds reached shows their mean and how many.
    """
    if not all("history" in r.results for r in group.runs):
        return "—"
    per_run = [seconds_to_quality_marks(r.results["history"]) for r in group.runs]
    cells = []
    for metric, marks in QUALITY_MARKS.items():
        for mark in marks:
            minutes = [run_marks[metric][quality_mark_key(mark)] for run_marks in per_run]
            reached = [m / 60 for m in minutes if m is not None]
            if not reached:
                cells.append("not reached")
                continue
            cell = f"{_mean_std(reached, 1)} min"
            if len(reached) < len(minutes):
                cell += f" ({len(reached)} of {len(minutes)} seeds)"
            cells.append(cell)
    return " / ".join(cells)


def _machines(group):
    """The machines the group's runs trained on; records from before eval.json named them count
    as "unrecorded"."""
    names = [name for run in group.runs for name in run.results.get("machines", ["unrecorded"])]
    return "; ".join(dict.fromkeys(names))


def _quality_marks_heading():
    """Every quality mark, grouped by metric: e.g. "18 / 20.4 dB / 0.9 SSIM"."""
    return " / ".join(
        " / ".join(quality_mark_key(mark) for mark in marks) + f" {QUALITY_MARK_UNITS[metric]}"
        for metric, marks in QUALITY_MARKS.items()
    )


def _test_scores(runs, metric, digits):
    """The mean ± spread of `metric` over the runs' test scorings; `—` where none was scored
    (records from before the test split), and how many seeds where only some were."""
    values = [r.results["test"][metric] for r in runs if "test" in r.results]
    if not values:
        return "—"
    cell = _mean_std(values, digits)
    return cell if len(values) == len(runs) else f"{cell} ({len(values)} of {len(runs)} seeds)"


def _validation(run, metric):
    """`metric` of the run's validation scores of the mask net its test scores are of: the
    selected checkpoint under `--select=unsupervised`, the average under
    `--average_checkpoints`, else the final checkpoint."""
    return run.results.get("selected", run.results)[metric]


def markdown_table(groups, describe=True):
    """The results table: one row per group, test scores first, then validation (what every
    choice was made on), the paper's MNIST figures beside ours; under it, with `describe`, each
    group's method and distinguishing settings."""
    lines = [
        "| run | test PSNR (dB) | test SSIM | validation PSNR (dB) | validation SSIM | "
        "paper PSNR / SSIM | seeds | steps | train time | "
        f"time to {_quality_marks_heading()} (validation) | separation time | machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        runs = group.runs
        paper = PAPER_MNIST.get(group.method) if all(_is_paper_mnist(r) for r in runs) else None
        test_seconds = [r.results["test_seconds"] for r in runs if "test_seconds" in r.results]
        lines.append(
            "| "
            + " | ".join(
                [
                    group.name,
                    _test_scores(runs, "psnr_db", 2),
                    _test_scores(runs, "ssim", 3),
                    _mean_std([_validation(r, "psnr_db") for r in runs], 2),
                    _mean_std([_validation(r, "ssim") for r in runs], 3),
                    f"{paper[0]:.1f} / {paper[1]:.2f}" if paper else "—",
                    ", ".join(str(r.seed) for r in runs),
                    _steps(group),
                    _duration(np.mean([r.results["train_seconds"] for r in runs])),
                    _time_to_quality(group),
                    _duration(np.mean(test_seconds)) if test_seconds else "—",
                    _machines(group),
                ]
            )
            + " |"
        )
    half_masks = {
        (round(r.results["half_mask_psnr_db"], 2), round(r.results["half_mask_ssim"], 3))
        for g in groups
        for r in g.runs
    }
    if len(half_masks) == 1:
        ((psnr, ssim),) = half_masks
        lines += [
            "",
            f"Half mask (M = 1/2) on these validation mixtures: {psnr:.2f} dB, {ssim:.3f} SSIM.",
        ]
    described = [
        group for group in groups if describe and (group.settings or group.name != group.method)
    ]
    if described:
        lines += ["", "Runs:", ""]
        lines += [
            f"- {group.name}: {group.method}" + (f"; {group.settings}" if group.settings else "")
            for group in described
        ]
    return "\n".join(lines) + "\n"


def _tile(image):
    """`[H, W, C]` float image -> uint8 `[S*H, S*W, 3]`, clipped to [0, 1] for display."""
    image = np.clip(image, 0.0, 1.0)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    big = np.kron(image, np.ones((_FIGURE_SCALE, _FIGURE_SCALE, 1)))
    return np.round(big * 255).astype(np.uint8)


def _wrapped(text, width, font, draw):
    """`text` in lines no wider than `width` pixels: broken at spaces, and inside a word only
    where the word alone is wider (a setting like `disc_learning_rate=0.0002` in a 96-pixel
    column would otherwise run into the next column's label)."""

    def fits(line):
        return draw.textlength(line, font=font) <= width

    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if fits(candidate):
            lines[-1] = candidate
            continue
        if lines[-1]:
            lines.append("")
        for char in word:
            if lines[-1] and not fits(lines[-1] + char):
                lines.append("")
            lines[-1] += char
    return "\n".join(lines)


def render_figure(groups, path, count=4):
    """Writes the Fig. 2-style PNG: per mixture two rows (sources a, b); columns mixture | each
    group's estimates | ground truth.

    Only groups whose first run has a `samples.npz` appear; runs whose validation mixtures differ
    from the first such run's are left out with a warning.

    Returns:
      The names of the groups shown, in column order.
    """
    columns, names, reference = [], [], None
    for group in groups:
        sample_path = os.path.join(group.runs[0].workdir, SAMPLES_FILE)
        if not os.path.exists(sample_path):
            log.warning("%s: no %s, left out of the figure", group.runs[0].workdir, SAMPLES_FILE)
            continue
        with np.load(sample_path, allow_pickle=False) as samples:
            samples = dict(samples)
        if reference is None:
            reference = samples
        elif not np.array_equal(samples["mixtures"], reference["mixtures"]):
            log.warning(
                "%s: other validation mixtures than %s, left out of the figure",
                group.runs[0].workdir,
                columns[0][0],
            )
            continue
        columns.append((group.runs[0].workdir, samples["estimates_a"], samples["estimates_b"]))
        names.append(group.name)
    if reference is None:
        raise UserError(
            "no run has a samples.npz to draw: run the methods again with this "
            "version, which writes one at every evaluation"
        )
    count = min(count, len(reference["mixtures"]))
    cells = [("mixture", reference["mixtures"], None)]
    cells += [(name, a, b) for name, (_, a, b) in zip(names, columns)]
    cells.append(("ground truth", reference["sources_a"], reference["sources_b"]))
    cell = reference["mixtures"].shape[1] * _FIGURE_SCALE
    font = ImageFont.load_default(size=_FONT_SIZE)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [_wrapped(name, cell, font, measure) for name, _, _ in cells]
    header = _GAP + _LINE_HEIGHT * max(label.count("\n") + 1 for label in labels)
    width = len(cells) * (cell + _GAP) + _GAP
    height = header + count * (2 * cell + 3 * _GAP) + _GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for column, ((_, first, second), label) in enumerate(zip(cells, labels)):
        left = _GAP + column * (cell + _GAP)
        draw.multiline_text(
            (left, 2), label, fill="black", font=font, spacing=_LINE_HEIGHT - _FONT_SIZE
        )
        for i in range(count):
            top = header + i * (2 * cell + 3 * _GAP)
            canvas.paste(Image.fromarray(_tile(first[i])), (left, top))
            if second is not None:  # the mixture column has one image per pair of rows
                canvas.paste(Image.fromarray(_tile(second[i])), (left, top + cell + _GAP))
    canvas.save(path)
    return names


def copy_run_records(runs, out_dir):
    """Copies each run's `eval.json` and `samples.npz` into `OUT/runs/NAME`, NAME being the
    workdir's last path component, so that `--runs='OUT/runs/*'` regenerates this report.

    A run read from its own copy (regenerating from OUT/runs) is left as it is; a copy whose run
    has no samples.npz loses a stale one.

    Raises:
      UserError: two runs' workdirs share a name, or a copy cannot be written.
    """
    workdirs = {}
    for run in runs:
        name = os.path.basename(os.path.normpath(run.workdir))
        if workdirs.setdefault(name, run.workdir) != run.workdir:
            raise UserError(
                f"--copy_runs: {workdirs[name]} and {run.workdir} would both be copied "
                f"to {os.path.join(out_dir, RUNS_DIR, name)}; give the runs' "
                "directories distinct names"
            )
    try:
        for name, workdir in workdirs.items():
            target = os.path.join(out_dir, RUNS_DIR, name)
            os.makedirs(target, exist_ok=True)
            for file in _RUN_RECORD:
                source, copy = os.path.join(workdir, file), os.path.join(target, file)
                if not os.path.exists(source):
                    if os.path.exists(copy):
                        os.remove(copy)
                elif not (os.path.exists(copy) and os.path.samefile(source, copy)):
                    shutil.copyfile(source, copy)
    except OSError as e:
        raise UserError(
            f"--copy_runs: cannot copy into {os.path.join(out_dir, RUNS_DIR)} ({e.strerror})"
        ) from None


def dataset(run):
    """The data a run separates, as text: `SOURCE_A vs SOURCE_B`."""
    config = run.results["config"]
    return f"{config['source_a']} vs {config['source_b']}"


def split_by_dataset(runs):
    """`[(dataset, runs)]`: the paper's MNIST first, then the other datasets by name."""
    by_dataset = {}
    for run in runs:
        by_dataset.setdefault(dataset(run), []).append(run)
    return sorted(by_dataset.items(), key=lambda item: (not _is_paper_mnist(item[1][0]), item[0]))


def _figure_name(first, index):
    """The figure file of the `index`-th dataset section: `first` (separations.png),
    separations_2.png..."""
    stem, extension = os.path.splitext(first)
    return first if index == 0 else f"{stem}_{index + 1}{extension}"


def write_report(
    patterns, out_dir, figure_mixtures=4, copy_runs=False, readme=None, readme_runs=None
):
    """Reads the runs, writes `OUT/results.md` and `OUT/separations.png`; returns the table.

    Args:
      patterns: run directories or glob patterns.
      out_dir: where the report goes (created if needed).
      figure_mixtures: validation mixtures shown in the figure (at most the 8 in samples.npz).
      copy_runs: also copy the runs' records into OUT/runs (`copy_run_records`).
      readme: a Markdown file whose lines between README_BEGIN and README_END become the table
        and the figure, or None. It is checked before anything is written.
      readme_runs: the names of the groups (table rows) the README shows, or None for all. Its
        tables leave out the list of settings and link the full report instead; where they
        show fewer groups than the report, their figures are drawn apart (README_FIGURE_FILE).

    Raises:
      UserError: bad runs (`find_runs`), a bad README (`read_readme`), `readme_runs` without
        `readme` or with a name that no group has, or a file that cannot be written.
    """
    if readme_runs is not None and readme is None:
        raise UserError("--readme_runs names what --readme shows: give --readme too")
    readme_lines = read_readme(readme) if readme is not None else None
    runs = find_runs(patterns)
    datasets = [(name, group_runs(dataset_runs)) for name, dataset_runs in split_by_dataset(runs)]
    _check_readme_runs(readme_runs, datasets)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out={out_dir} ({e.strerror})") from None
    if copy_runs:
        copy_run_records(runs, out_dir)
    tables, sections, readme_sections = [], [], []
    for index, (name, groups) in enumerate(datasets):
        figure_path = os.path.join(out_dir, _figure_name(FIGURE_FILE, index))
        shown = render_figure(groups, figure_path, figure_mixtures)
        heading = f"### {name}\n\n" if len(datasets) > 1 else ""
        table = heading + markdown_table(groups)
        tables.append(table)
        sections.append(table + "\n" + _figure_link(shown, _figure_name(FIGURE_FILE, index)))
        readme_groups = [g for g in groups if readme_runs is None or g.name in readme_runs]
        if readme is None or not readme_groups:
            continue
        if len(readme_groups) < len(groups):
            figure_path = os.path.join(out_dir, _figure_name(README_FIGURE_FILE, index))
            shown = render_figure(readme_groups, figure_path, figure_mixtures)
        link = os.path.relpath(figure_path, os.path.dirname(os.path.abspath(readme)))
        readme_sections.append(
            heading
            + markdown_table(readme_groups, describe=False)
            + "\n"
            + _figure_link(shown, link.replace(os.sep, "/"))
        )
    table_path = os.path.join(out_dir, TABLE_FILE)
    with open(table_path, "w") as f:
        f.write("# Separation results\n\n" + "\n\n".join(sections) + "\n\n")
        f.write(
            "Each mixture takes two rows of a figure: the estimate matched to source a, "
            "then the one matched to source b. Estimates are clipped to [0, 1] for display "
            "only; the scores use them as they are.\n"
        )
    if readme is not None:
        link = os.path.relpath(table_path, os.path.dirname(os.path.abspath(readme)))
        readme_sections.append(
            f"Every run, with the settings that tell them apart: [{link}]({link})."
        )
        write_readme(readme, readme_lines, "\n\n".join(readme_sections))
    return "\n".join(tables)


def _check_readme_runs(names, datasets):
    """Raises UserError unless every name in `names` (or None) is a group of `datasets`."""
    known = [group.name for _, groups in datasets for group in groups]
    unknown = [name for name in names or () if name not in known]
    if unknown:
        raise UserError(
            f"--readme_runs: no run is named {', '.join(unknown)}; the runs are " + ", ".join(known)
        )


def _figure_link(shown, path):
    return f"![Separations: mixture | {' | '.join(shown)} | ground truth]({path})"


def read_readme(path):
    """The lines of the Markdown file `path`, checked to have README_BEGIN and later README_END.

    Raises:
      UserError: the file cannot be read, or lacks one marker line, or has them twice or in the
        wrong order.
    """
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except OSError as e:
        raise UserError(f"--readme: cannot read {path} ({e.strerror})") from None
    if lines.count(README_BEGIN) != 1 or lines.count(README_END) != 1:
        raise UserError(
            f"--readme: {path} must have the line {README_BEGIN!r} once, and later "
            f"the line {README_END!r} once; the report goes between them"
        )
    if lines.index(README_END) < lines.index(README_BEGIN):
        raise UserError(f"--readme: in {path}, {README_END!r} comes before {README_BEGIN!r}")
    return lines


def write_readme(path, lines, content):
    """Writes `lines` (from `read_readme`) to `path` with `content` between the marker lines."""
    begin, end = lines.index(README_BEGIN), lines.index(README_END)
    try:
        with open(path, "w") as f:
            f.write("\n".join(lines[: begin + 1] + ["", content, ""] + lines[end:]))
    except OSError as e:
        raise UserError(f"--readme: cannot write {path} ({e.strerror})") from None
