"""The report: runs grouped by method and settings, mean ± std over seeds, the Fig. 2 image."""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from aur_tf import rundir, train_lib
from aur_tf.data.mixtures import MixtureSplit
from aur_tf.errors import UserError
from aur_tf.report import results as report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RNG = np.random.default_rng(0)
SPLIT = MixtureSplit(*(_RNG.random((3, 8, 32, 32, 1), np.float32)))
MNIST = {"source_a": "mnist?labels=0-4", "source_b": "mnist?labels=5-9"}


def _fake_run(
    directory,
    psnr_db,
    ssim,
    seed,
    method=None,
    samples=True,
    history=(),
    machines=("AMD EPYC, 2 cores, AVX-512",),
    test=None,
    **config,
):
    """A workdir as train_lib (method None) or the baselines runner would leave it.

    `psnr_db`, `ssim`: the validation scores; `test`: `(psnr_db, ssim)` on the test split, None
    for a record from before the test split.
    `history`: a mask-net run's evaluations before the last, `(train_seconds, psnr_db, ssim)` each.
    `machines`: None for a record from before eval.json named them.
    """
    os.makedirs(directory)
    results = {
        "psnr_db": psnr_db,
        "ssim": ssim,
        "half_mask_psnr_db": 16.05,
        "half_mask_ssim": 0.665,
        "permutation": [0, 1],
        "train_seconds": 90.0,
        "config": {**MNIST, "workdir": str(directory), "seed": seed, **config},
    }
    if machines is not None:
        results["machines"] = list(machines)
    if test is not None:
        results["test"] = {"psnr_db": test[0], "ssim": test[1]}
    if method:
        results.update(method=method, method_settings={}, step=0, test_seconds=30.0)
    else:
        results["config"] = {
            "mode": "unsupervised",
            "train_steps": 100,
            "energy": "batch",
            **results["config"],
        }
        results["step"] = 100
        results["history"] = [
            {"step": 0, "train_seconds": seconds, "psnr_db": psnr, "ssim": structure}
            for seconds, psnr, structure in history
        ]
        results["history"].append(
            {"step": 100, "train_seconds": 2000.0, "psnr_db": psnr_db, "ssim": ssim}
        )
    with open(os.path.join(directory, "eval.json"), "w") as f:
        json.dump(results, f)
    if samples:
        estimate = np.full_like(SPLIT.mixtures, psnr_db / 30)
        rundir.write_samples(str(directory), SPLIT, estimate, 1 - estimate, (1, 0))


@pytest.fixture
def runs(tmp_path):
    _fake_run(tmp_path / "rpca", 11.0, 0.5, seed=0, method="rpca", test=(10.5, 0.45))
    for seed, psnr in enumerate((13.0, 14.0, 15.0)):
        _fake_run(
            tmp_path / f"glo_seed{seed}",
            psnr,
            0.6,
            seed=seed,
            method="glo",
            samples=seed == 0,
            test=(psnr - 1, 0.5),
        )
    # Seeds of one setting, computed with different convolution kernels (seed 1 by a version
    # that predates --conv_kernels): the kernels do not change the method.
    _fake_run(
        tmp_path / "ours_seed0",
        22.0,
        0.91,
        seed=0,
        conv_kernels="phases",
        test=(21.5, 0.9),
        history=[(600.0, 18.5, 0.8), (1200.0, 21.0, 0.89), (1500.0, 20.0, 0.9)],
    )
    _fake_run(
        tmp_path / "ours_seed1",
        23.0,
        0.89,
        seed=1,
        machines=None,
        history=[(720.0, 18.2, 0.85), (900.0, 19.0, 0.88), (1800.0, 20.3, 0.87)],
    )
    _fake_run(tmp_path / "ours_pixel", 11.5, 0.5, seed=0, energy="pixel", samples=False)
    return tmp_path


def test_table_groups_seeds_and_settings_beside_the_paper(runs):
    groups = report.group_runs(report.find_runs([str(runs / "*")]))
    # Named by their directories less `_seedN`; the settings that tell them apart go below.
    assert [g.name for g in groups] == ["rpca", "glo", "ours", "ours_pixel"]
    table = report.markdown_table(groups)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    # Test first, then validation. Sample standard deviation over seeds: 13, 14, 15 -> 14 ± 1.
    assert (
        "| 13.00 ± 1.00 | 0.500 ± 0.000 | 14.00 ± 1.00 | 0.600 ± 0.000 | 13.0 / 0.74 | 0, 1, 2 |"
    ) in rows["glo"]
    # Seed 1's record predates the test split.
    assert (
        "| 21.50 (1 of 2 seeds) | 0.900 (1 of 2 seeds) | 22.50 ± 0.71 | 0.900 ± 0.014 "
        "| 20.4 / 0.90 | 0, 1 | 100 |"
    ) in rows["ours"]
    assert "| — | — | 11.50 | 0.500 |" in rows["ours_pixel"]
    assert table.splitlines()[0].startswith(
        "| run | test PSNR (dB) | test SSIM | validation PSNR (dB) | validation SSIM |"
    )
    assert table.splitlines()[0].endswith(
        "| time to 18 / 20.4 dB / 0.9 SSIM (validation) | separation time | machine |"
    )
    # First crossings from the histories: 18 dB after 10 and 12 minutes, 20.4 dB after 20 and
    # (at seed 1's last evaluation) 33.3; 0.9 SSIM only by seed 0, after 25.
    assert "| 11.0 ± 1.4 min / 26.7 ± 9.4 min / 25.0 min (1 of 2 seeds) |" in rows["ours"]
    assert "| not reached / not reached / not reached |" in rows["ours_pixel"]
    assert rows["rpca"].endswith(
        "| 10.50 | 0.450 | 11.00 | 0.500 | 11.5 / 0.36 | 0 | 0 | 1.5 min | — | 30 s "
        "| AMD EPYC, 2 cores, AVX-512 |"
    )
    # Seed 1's record predates eval.json's machines.
    assert rows["ours"].endswith("| — | AMD EPYC, 2 cores, AVX-512; unrecorded |")
    assert "16.05 dB, 0.665 SSIM" in table
    assert table.endswith(
        "Runs:\n\n- ours: unsupervised; energy=batch\n- ours_pixel: unsupervised; energy=pixel\n"
    )


def test_validation_columns_are_of_the_checkpoint_that_test_scored(tmp_path):
    _fake_run(tmp_path / "picked", 20.0, 0.8, seed=0, test=(21.0, 0.85), select="unsupervised")
    with open(tmp_path / "picked" / "eval.json") as f:
        record = json.load(f)
    record["selected"] = {"step": 50, "remix_consistency_db": 19.0, "psnr_db": 21.5, "ssim": 0.86}
    with open(tmp_path / "picked" / "eval.json", "w") as f:
        json.dump(record, f)
    table = report.markdown_table(report.group_runs(report.find_runs([str(tmp_path / "*")])))
    (row,) = [line for line in table.splitlines() if line.startswith("| picked")]
    assert row.split(" | ")[1:5] == ["21.00", "0.850", "21.50", "0.860"]


def test_supervised_runs_are_not_told_apart_by_the_adversarial_settings_they_ignore(tmp_path):
    for seed, (disc_width, steps) in enumerate([(64, 100), (32, 100), (32, 200)]):
        _fake_run(
            tmp_path / f"supervised_seed{seed}",
            23.0,
            0.9,
            seed=seed,
            mode="supervised",
            disc_width=disc_width,
            mask_steps_per_disc_step=2 + seed,
            train_steps=steps,
        )
    for disc_width in (32, 64):
        _fake_run(tmp_path / f"unsupervised{disc_width}", 20.0, 0.8, seed=0, disc_width=disc_width)
    groups = report.group_runs(report.find_runs([str(tmp_path / "*")]))
    # Groups that would share a name carry their settings in it.
    assert [(g.name, len(g.runs)) for g in groups] == [
        ("unsupervised32", 1),
        ("unsupervised64", 1),
        ("supervised (train_steps=100)", 2),
        ("supervised (train_steps=200)", 1),
    ]


def test_paper_figures_only_for_the_papers_data_and_unfinished_runs_marked(tmp_path):
    _fake_run(
        tmp_path / "shoes",
        19.0,
        0.7,
        seed=0,
        source_a="folder:shoes",
        source_b="folder:bags",
        train_steps=500,
    )
    _fake_run(
        tmp_path / "rpca",
        9.0,
        0.2,
        seed=0,
        method="rpca",
        source_a="folder:shoes",
        source_b="folder:bags",
    )
    table = report.markdown_table(report.group_runs(report.find_runs([str(tmp_path / "*")])))
    assert "paper" in table.splitlines()[0]
    assert "| — | — | 9.00 | 0.200 | — |" in table
    assert "100 of 500 (unfinished)" in table


@pytest.mark.parametrize(
    "text",
    [
        "unsupervised",
        "unsupervised (energy=pixel)",
        "unsupervised (batch_pairs=32, disc_learning_rate=0.0002, mask_steps_per_disc_step=2)",
    ],
)
def test_figure_labels_fit_their_column_and_keep_every_character(text):
    font = ImageFont.load_default(size=report._FONT_SIZE)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label = report._wrapped(text, 96, font, draw)
    assert all(draw.textlength(line, font=font) <= 96 for line in label.split("\n"))
    assert "".join(label.split()) == "".join(text.split())


def test_figure_has_a_column_per_group_with_samples(runs):
    report.write_report(
        [str(runs / "rpca"), str(runs / "glo_seed*"), str(runs / "ours_*")],
        str(runs / "out"),
        figure_mixtures=3,
    )
    text = (runs / "out" / report.TABLE_FILE).read_text()
    assert "mixture | rpca | glo | ours | ground truth" in text
    image = Image.open(runs / "out" / report.FIGURE_FILE)
    cell = 32 * report._FIGURE_SCALE
    # Columns: mixture, three groups with samples (energy=pixel has none), ground truth.
    assert image.width == 5 * (cell + report._GAP) + report._GAP
    # Under the column labels, each of the 3 mixtures takes two rows of images.
    assert image.height - 3 * (2 * cell + 3 * report._GAP) - report._GAP in range(10, 60)


def test_copied_run_records_regenerate_the_same_report(runs):
    out, again = runs / "out", runs / "again"
    report.write_report([str(runs / "*")], str(out), copy_runs=True)
    assert sorted(os.listdir(out / report.RUNS_DIR)) == [
        "glo_seed0",
        "glo_seed1",
        "glo_seed2",
        "ours_pixel",
        "ours_seed0",
        "ours_seed1",
        "rpca",
    ]
    assert sorted(os.listdir(out / report.RUNS_DIR / "ours_pixel")) == ["eval.json"]
    # A stale samples.npz beside a run that has none goes; regenerating in place copies nothing.
    (out / report.RUNS_DIR / "ours_pixel" / rundir.SAMPLES_FILE).write_bytes(b"stale")
    report.write_report([str(runs / "*")], str(out), copy_runs=True)
    assert not (out / report.RUNS_DIR / "ours_pixel" / rundir.SAMPLES_FILE).exists()
    report.write_report([str(out / report.RUNS_DIR / "*")], str(again), copy_runs=True)
    for file in (report.TABLE_FILE, report.FIGURE_FILE):
        assert (again / file).read_bytes() == (out / file).read_bytes()


def test_copy_runs_refuses_two_workdirs_of_one_name(tmp_path):
    for parent in ("a", "b"):
        _fake_run(tmp_path / parent / "seed0", 20.0, 0.9, seed=int(parent == "b"), samples=False)
    with pytest.raises(UserError, match="would both be copied to .*/out/runs/seed0; give"):
        report.write_report([str(tmp_path / "*" / "seed0")], str(tmp_path / "out"), copy_runs=True)


def _regenerate_command():
    """The flags of the command docs/results.md gives for regenerating the README's results."""
    with open(os.path.join(ROOT, "docs", "results.md")) as f:
        (line,) = [
            line
            for line in f
            if line.startswith("python -m aur_tf.report ") and "--readme=README.md" in line
        ]
    return dict(arg.removeprefix("--").split("=", 1) for arg in shlex.split(line)[3:])


def test_the_readme_results_regenerate_from_the_committed_run_records(tmp_path):
    flags = _regenerate_command()
    assert (flags["runs"], flags["out"]) == ("docs/results/runs/*", "docs/results")
    results = os.path.join(ROOT, flags["out"])
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    (tmp_path / "README.md").write_text(readme)
    # The report goes beside a README copy so the figure's link is the real README's.
    report.write_report(
        [os.path.join(ROOT, flags["runs"])],
        str(tmp_path / flags["out"]),
        readme=str(tmp_path / "README.md"),
        readme_runs=flags["readme_runs"].split(","),
    )
    with open(os.path.join(results, report.TABLE_FILE)) as f:
        assert (tmp_path / "docs" / "results" / report.TABLE_FILE).read_text() == f.read()
    assert (tmp_path / "README.md").read_text() == readme


def test_readme_gets_the_table_and_figure_between_its_markers_only(runs, tmp_path):
    readme = tmp_path / "docs" / "README.md"
    readme.parent.mkdir()
    readme.write_text(
        f"# Title\n\n{report.README_BEGIN}\nan old table\n{report.README_END}\n\nText after.\n"
    )
    table = report.write_report([str(runs / "*")], str(tmp_path / "out"), readme=str(readme))
    before, between, after = _split_at_markers(readme.read_text())
    assert before == "# Title\n\n" and after == "\nText after.\n"
    # The README has the report's table less its list of settings, which the link leads to.
    rows, settings = table.split("\nRuns:\n")
    assert "- ours_pixel: unsupervised; energy=pixel" in settings
    assert between.startswith("\n" + rows + "\n![Separations: mixture | ")
    assert between.endswith(
        "](../out/separations.png)\n\n"
        "Every run, with the settings that tell them apart: [../out/results.md](../out/results.md)."
        "\n\n"
    )
    assert "an old table" not in between
    assert sorted(os.listdir(tmp_path / "out")) == [report.TABLE_FILE, report.FIGURE_FILE]
    once = readme.read_text()
    report.write_report([str(runs / "*")], str(tmp_path / "out"), readme=str(readme))
    assert readme.read_text() == once


def test_readme_runs_pick_the_readme_rows_and_figure_columns(runs, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.README_BEGIN}\n{report.README_END}\n")
    table = report.write_report(
        [str(runs / "*")], str(tmp_path / "out"), readme=str(readme), readme_runs=["ours", "rpca"]
    )
    _, between, _ = _split_at_markers(readme.read_text())
    assert [line.split(" | ")[0] for line in table.split("\n") if line.startswith("| ")][1:] == [
        "| rpca",
        "| glo",
        "| ours",
        "| ours_pixel",
    ]
    assert [line.split(" | ")[0] for line in between.split("\n") if line.startswith("| ")][1:] == [
        "| rpca",
        "| ours",
    ]
    assert "![Separations: mixture | rpca | ours | ground truth](out/readme_separations.png)" in (
        between
    )
    assert Image.open(tmp_path / "out" / report.README_FIGURE_FILE).width < (
        Image.open(tmp_path / "out" / report.FIGURE_FILE).width
    )


@pytest.mark.parametrize(
    "readme_runs, readme, message",
    [
        (["ours", "theirs"], True, "--readme_runs: no run is named theirs; the runs are rpca, glo"),
        (["ours"], False, "--readme_runs names what --readme shows: give --readme too"),
    ],
)
def test_bad_readme_runs_are_a_user_error_before_anything_is_written(
    runs, tmp_path, readme_runs, readme, message
):
    path = tmp_path / "README.md"
    path.write_text(f"{report.README_BEGIN}\n{report.README_END}\n")
    with pytest.raises(UserError, match=re.escape(message)):
        report.write_report(
            [str(runs / "*")],
            str(tmp_path / "out"),
            readme=str(path) if readme else None,
            readme_runs=readme_runs,
        )
    assert path.read_text() == f"{report.README_BEGIN}\n{report.README_END}\n"
    assert not (tmp_path / "out").exists()


def _split_at_markers(text):
    before, rest = text.split(report.README_BEGIN + "\n")
    between, after = rest.split(report.README_END + "\n")
    return before, between, after


def test_settings_added_later_group_new_runs_with_old_records_at_their_defaults(tmp_path):
    _fake_run(tmp_path / "ours_seed0", 22.0, 0.91, seed=0)
    _fake_run(
        tmp_path / "ours_seed1", 22.2, 0.91, seed=1, select="last", trials=1, energy_margin=0.5
    )
    _fake_run(tmp_path / "hinge_seed0", 22.4, 0.92, seed=0, energy="hinge", energy_margin=0.5)
    groups = report.group_runs(report.find_runs([str(tmp_path / "*")]))
    assert [(g.name, len(g.runs), g.settings) for g in groups] == [
        ("ours", 2, "energy=batch"),
        ("hinge", 1, "energy=hinge, energy_margin=0.5"),
    ]


@pytest.mark.parametrize(
    "start, steps",
    [
        ("beta_fade_start", "beta_fade_steps"),
        ("learning_rate_decay_start", "learning_rate_decay_steps"),
    ],
)
def test_a_schedule_groups_apart_and_old_records_group_without_one(tmp_path, start, steps):
    _fake_run(tmp_path / "ours_seed0", 22.0, 0.91, seed=0)  # from before the schedule's settings
    _fake_run(tmp_path / "ours_seed1", 22.2, 0.91, seed=1, **{start: 0, steps: 0})
    # Without a schedule its start changes nothing.
    _fake_run(tmp_path / "ours_seed2", 22.1, 0.91, seed=2, **{start: 900, steps: 0})
    _fake_run(tmp_path / "fade_seed0", 22.4, 0.92, seed=0, **{start: 0, steps: 500})
    _fake_run(tmp_path / "late_seed0", 22.5, 0.92, seed=0, **{start: 100, steps: 500})
    groups = report.group_runs(report.find_runs([str(tmp_path / "*")]))
    assert [(g.name, len(g.runs), g.settings) for g in groups] == [
        ("fade", 1, f"{start}=0, {steps}=500"),
        ("late", 1, f"{start}=100, {steps}=500"),
        ("ours", 3, f"{steps}=0"),
    ]


def test_instance_noise_groups_apart_and_its_fade_only_with_noise(tmp_path):
    _fake_run(tmp_path / "ours_seed0", 22.0, 0.91, seed=0)  # from before instance noise existed
    # Without noise its fade changes nothing.
    _fake_run(
        tmp_path / "ours_seed1", 22.1, 0.91, seed=1, instance_noise=0.0, instance_noise_steps=9
    )
    _fake_run(tmp_path / "noise_seed0", 22.4, 0.92, seed=0, instance_noise=0.1)
    _fake_run(
        tmp_path / "faded_seed0", 22.5, 0.92, seed=0, instance_noise=0.1, instance_noise_steps=500
    )
    groups = report.group_runs(report.find_runs([str(tmp_path / "*")]))
    assert [(g.name, len(g.runs), g.settings) for g in groups] == [
        ("ours", 2, "instance_noise=0"),
        ("noise", 1, "instance_noise=0.1, instance_noise_steps=0"),
        ("faded", 1, "instance_noise=0.1, instance_noise_steps=500"),
    ]


def test_each_dataset_gets_its_own_table_and_figure_mnist_first(tmp_path):
    shoes = {"source_a": "fashion_mnist?labels=5,7,9", "source_b": "fashion_mnist?labels=8"}
    _fake_run(tmp_path / "runs" / "fashion_seed0", 17.0, 0.75, seed=0, test=(17.1, 0.76), **shoes)
    _fake_run(tmp_path / "runs" / "mnist_seed0", 22.0, 0.91, seed=0, test=(22.1, 0.92))
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.README_BEGIN}\n{report.README_END}\n")
    report.write_report([str(tmp_path / "runs" / "*")], str(tmp_path / "out"), readme=str(readme))
    text = (tmp_path / "out" / report.TABLE_FILE).read_text()
    mnist = text.index("### mnist?labels=0-4 vs mnist?labels=5-9")
    fashion = text.index("### fashion_mnist?labels=5,7,9 vs fashion_mnist?labels=8")
    assert mnist < text.index("| mnist |") < text.index("(separations.png)") < fashion
    assert fashion < text.index("| fashion |") < text.index("(separations_2.png)")
    assert "| mnist |" not in text[fashion:]
    assert sorted(os.listdir(tmp_path / "out")) == [
        report.TABLE_FILE,
        "separations.png",
        "separations_2.png",
    ]
    _, between, _ = _split_at_markers(readme.read_text())
    assert "(out/separations.png)" in between and "(out/separations_2.png)" in between


@pytest.mark.parametrize(
    "content",
    [
        "no markers\n",
        f"{report.README_BEGIN}\n",
        f"{report.README_END}\n{report.README_BEGIN}\n",
        f"{report.README_BEGIN}\n{report.README_BEGIN}\n{report.README_END}\n",
    ],
)
def test_a_readme_without_one_pair_of_markers_in_order_is_a_user_error(runs, tmp_path, content):
    readme = tmp_path / "README.md"
    readme.write_text(content)
    with pytest.raises(UserError, match="--readme"):
        report.write_report([str(runs / "*")], str(tmp_path / "out"), readme=str(readme))
    assert readme.read_text() == content
    assert not (tmp_path / "out").exists()


def test_mask_net_runs_write_samples_the_figure_can_use(make_config, stroke_data, tmp_path):
    config = make_config(train_steps=2, eval_every=2, checkpoint_every=2, log_every=2)
    results = train_lib.train(config, data=stroke_data)
    with np.load(os.path.join(config.workdir, rundir.SAMPLES_FILE)) as samples:
        assert samples["estimates_a"].shape == (rundir.SAMPLE_COUNT, 32, 32, 3)
        np.testing.assert_allclose(
            samples["estimates_a"] + samples["estimates_b"],
            2 * stroke_data.validation.mixtures[: rundir.SAMPLE_COUNT],
            atol=1e-5,
        )
    table = report.write_report([config.workdir], str(tmp_path / "out"))
    assert f"{results['psnr_db']:.2f}" in table


def test_command_line(runs, tmp_path):
    command = [sys.executable, "-m", "aur_tf.report", f"--out={runs / 'out'}"]
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.README_BEGIN}\n{report.README_END}\n")
    done = subprocess.run(
        command + [f"--runs={runs / 'glo_*'},{runs / 'rpca'}", f"--readme={readme}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "| glo | 13.00 ± 1.00 | 0.500 ± 0.000 | 14.00 ± 1.00 |" in done.stdout
    assert "| glo | 13.00 ± 1.00 | 0.500 ± 0.000 | 14.00 ± 1.00 |" in readme.read_text()
    bad = subprocess.run(
        command + [f"--runs={runs / 'nothing_*'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: --runs: '{runs / 'nothing_*'}' matches no directory with an eval.json"
    ]


def test_a_pattern_without_runs_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="matches no directory"):
        report.find_runs([str(tmp_path / "missing")])


@pytest.mark.parametrize(
    "damage, field",
    [
        (lambda r: r.pop("psnr_db"), "psnr_db"),
        (lambda r: r.update(ssim="0.9"), "ssim"),
        (lambda r: r.update(step=True), "step"),
        (lambda r: r.pop("config"), "config"),
        (lambda r: r["config"].pop("mode"), "config.mode"),
        (lambda r: r["config"].update(seed=1.5), "config.seed"),
        (lambda r: r["config"].update(source_b=None), "config.source_b"),
        (lambda r: r["config"].update(train_steps="25000"), "config.train_steps"),
        (lambda r: r["history"][0].pop("ssim"), "history"),
        (lambda r: r.update(history={}), "history"),
        (lambda r: r.update(machines="AMD EPYC"), "machines"),
        (lambda r: r.update(machines=[1]), "machines"),
    ],
)
def test_a_damaged_eval_json_is_named_with_its_field(tmp_path, damage, field):
    _fake_run(tmp_path / "ours", 22.0, 0.91, seed=0, samples=False)
    path = tmp_path / "ours" / "eval.json"
    results = json.loads(path.read_text())
    damage(results)
    path.write_text(json.dumps(results))
    with pytest.raises(UserError) as raised:
        report.find_runs([str(tmp_path / "ours")])
    assert str(raised.value) == (
        f"{tmp_path / 'ours'}/eval.json: {field} is missing or of the "
        "wrong type (a damaged file, or not written by aur_tf)"
    )


@pytest.mark.parametrize("content", ["[1, 2]", "null"])
def test_an_eval_json_that_is_no_object_is_a_user_error(tmp_path, content):
    os.makedirs(tmp_path / "run")
    (tmp_path / "run" / "eval.json").write_text(content)
    with pytest.raises(UserError, match="the top-level object is missing"):
        report.find_runs([str(tmp_path / "run")])
