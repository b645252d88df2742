"""Rerun a shipped separator's figures from the shipped file and compare them with its metadata.

  python bench/shipped_model.py --model=mnist

The separator (a name of `aur_tf.separator.SHIPPED`, or an exported .onnx file) carries its
training config and the validation and test PSNR/SSIM its run recorded. This rebuilds that run's
validation and test mixtures from the config, separates them with the file through onnxruntime's
CPU provider, scores them as training's evaluation does, and prints both figures side by side.
Exit status 1 when a PSNR differs from the metadata's by more than `PSNR_AGREEMENT_DB`; an int8
file carries its float32 run's figures, so for it the bound is `INT8_LOSS_DB` below them.
"""

import argparse
import dataclasses
import json
import sys

from aur_tf import evaluation
from aur_tf.config import Config
from aur_tf.data.mixtures import load_mixture_dataset
from aur_tf.errors import UserError
from aur_tf.separator import Separator

PSNR_AGREEMENT_DB = 0.01
# What issue 30 allows int8 to lose against float32.
INT8_LOSS_DB = 0.2


def rerun(model):
    """`({split: (recorded, rerun)}` PSNR/SSIM dicts for the splits the metadata records, whether
    the file is int8)."""
    separator = Separator.load(model, provider="cpu")
    settings = json.loads(separator.metadata["training_config"])
    # The paths are those of the machine that trained it; the data comes from this one's cache.
    config = dataclasses.replace(Config(**settings), workdir="unused", cache_dir=Config().cache_dir)
    data = load_mixture_dataset(config)
    figures = {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if f"{prefix}_psnr_db" not in separator.metadata:
            continue
        held_out = getattr(data, split)
        natural = 1.0 - held_out.mixtures if config.invert else held_out.mixtures
        source_a, source_b = separator.separate(natural)
        if config.invert:
            source_a, source_b = 1.0 - source_a, 1.0 - source_b
        scores = evaluation.score_estimates(held_out, source_a, source_b)
        recorded = {
            key: float(separator.metadata[f"{prefix}_{key}"]) for key in ("psnr_db", "ssim")
        }
        figures[split] = (recorded, {key: scores[key] for key in ("psnr_db", "ssim")})
    return figures, separator.metadata.get("precision", "").startswith("int8")


def agrees(change_db, int8):
    """Whether a rerun's PSNR `change_db` against the metadata's is within the bound: the same to
    `PSNR_AGREEMENT_DB`, or for an int8 file at most `INT8_LOSS_DB` below its float32 run's."""
    if int8:
        return -INT8_LOSS_DB <= change_db <= PSNR_AGREEMENT_DB
    return abs(change_db) <= PSNR_AGREEMENT_DB


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist", help="a shipped separator's name or a file")
    model = parser.parse_args().model
    try:
        figures, int8 = rerun(model)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    agree = True
    for split, (recorded, measured) in figures.items():
        change = measured["psnr_db"] - recorded["psnr_db"]
        print(
            f"{split:<10} recorded {recorded['psnr_db']:.3f} dB / {recorded['ssim']:.4f}, "
            f"rerun {measured['psnr_db']:.3f} dB / {measured['ssim']:.4f} ({change:+.3f} dB"
            f"{', int8 against its float32 run' if int8 else ''})"
        )
        agree &= agrees(change, int8)
    sys.exit(0 if agree else 1)


if __name__ == "__main__":
    main()
