"""Two trained models on the same images: is one really better?

    python trainers/compare.py RUN_A RUN_B                  # the centre crop (CIFAR: the image itself)
    python trainers/compare.py RUN_A RUN_B --view 10-crop
    python trainers/compare.py a.keras b.keras --dataset cifar10 --output compare.json

Both models are scored image by image on the same split, in the same order
(``evaluate.py``'s pipelines, so each accuracy is the one ``evaluate.py``
prints). Two runs tested on the same 3,925 images are a paired sample: what
decides is the images on which they disagree, not the two accuracies' separate
sampling noise. Printed: the accuracies, the four counts (both right, only A,
only B, both wrong), the difference B - A with its 95% interval for paired
proportions, and McNemar's exact test on the disagreements (a two-sided
binomial test at one half). ``--output`` writes the same as strict JSON.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys

from trainers.core.common import UserError, run_main, write_json_atomic  # noqa: E402

VIEWS = ("single", "10-crop")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="a run directory, a .keras file or weights:ARCH/NAME (A)")
    p.add_argument("b", help="a run directory, a .keras file or weights:ARCH/NAME (B)")
    p.add_argument("--which", choices=("final", "best"), default="final",
                   help="in run directories: model.keras (final, default) or best.keras")  # fmt: skip
    p.add_argument("--view", choices=VIEWS, default="single",
                   help="single: the centre crop at the training size (CIFAR: the image itself); "
                   "10-crop: the paper's ten crops, softmax averaged")  # fmt: skip
    p.add_argument("--dataset", help="TFDS dataset name or 'synthetic' (default: the runs', which must agree)")
    p.add_argument("--data-dir", help="TFDS data dir (default: the runs', $TFDS_DATA_DIR, ~/tensorflow_datasets)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test: the dataset's test split (its 'validation' split where it has no 'test')")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    p.add_argument("--output", help="also write the result to this JSON file")
    return p


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the probability, if A and B were
    equally good, of a split of the ``only_a + only_b`` disagreements at least
    as uneven as this one (binomial, p = 1/2). 1.0 when they never disagree."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_difference(only_a: int, only_b: int, n: int) -> tuple[float, float, float]:
    """Accuracy of B minus accuracy of A, and its 95% interval (Wald, for
    paired proportions: the variance comes from the disagreements only)."""
    diff = (only_b - only_a) / n
    se = math.sqrt(max(0.0, (only_a + only_b) - (only_b - only_a) ** 2 / n)) / n
    return diff, diff - 1.96 * se, diff + 1.96 * se


def predictions(model, info, view: str, split: str, batch_size: int, seed: int) -> list:
    from trainers.evaluate import score, view_pipeline

    pairs: list = []
    ds = view_pipeline(info, view, split, batch_size, seed=seed)
    score(model, ds, ten_crop=view == "10-crop", k=1, per_image=pairs)
    return pairs


def paired(model_a, config_a: dict, model_b, config_b: dict, *, dataset=None, data_dir=None, split="test",
           view="single", batch_size=100) -> dict:
    """A and B scored image by image on the same images: the four counts,
    the accuracies, B - A with its 95% interval, McNemar's exact p."""
    from trainers.evaluate import dataset_for, single_view

    if not dataset and config_a.get("dataset") != config_b.get("dataset"):
        raise UserError(f"A was trained on {config_a.get('dataset')!r} and B on {config_b.get('dataset')!r}: "
                        "give --dataset to compare both on one")  # fmt: skip
    if model_a.input_shape[1:] != model_b.input_shape[1:]:
        raise UserError(f"A takes {model_a.input_shape[1:]} and B {model_b.input_shape[1:]} images: "
                        "a paired comparison needs the same images")  # fmt: skip
    info_a = dataset_for(model_a, config_a, dataset, data_dir)
    info_b = dataset_for(model_b, config_b, dataset, data_dir)
    for what in ("num_classes", "test_split", "num_test", "num_val"):
        if getattr(info_a, what) != getattr(info_b, what):
            raise UserError(f"A and B read {info_a.name!r} differently ({what}: {getattr(info_a, what)} against "
                            f"{getattr(info_b, what)}): they were trained with different data settings")  # fmt: skip
    view = "10-crop" if view == "10-crop" else single_view(info_a)
    pred_a = predictions(model_a, info_a, view, split, batch_size, config_a.get("seed", 0))
    pred_b = predictions(model_b, info_b, view, split, batch_size, config_b.get("seed", 0))
    if not pred_a:
        raise UserError(f"the {split} split of {info_a.name!r} is empty")
    if [label for label, _ in pred_a] != [label for label, _ in pred_b]:
        raise UserError("A's and B's evaluations did not see the same images in the same order "
                        "(their runs hold out different validation images: different seeds?)")  # fmt: skip
    right_a = [label == guess for label, guess in pred_a]
    right_b = [label == guess for label, guess in pred_b]
    n = len(right_a)
    both = sum(a and b for a, b in zip(right_a, right_b))
    only_a = sum(a and not b for a, b in zip(right_a, right_b))
    only_b = sum(b and not a for a, b in zip(right_a, right_b))
    diff, low, high = paired_difference(only_a, only_b, n)
    return {
        "dataset": info_a.name, "synthetic": info_a.synthetic, "image_size": info_a.image_size,
        "split": info_a.test_split if split == "test" else "val", "view": view, "images": n,
        "accuracy_a": sum(right_a) / n, "accuracy_b": sum(right_b) / n,
        "both_right": both, "only_a_right": only_a, "only_b_right": only_b, "both_wrong": n - both - only_a - only_b,
        "difference_b_minus_a": diff, "difference_95_interval": [low, high],
        "mcnemar_exact_p": mcnemar_exact(only_a, only_b),
    }  # fmt: skip


def paired_words(result: dict) -> str:
    """B - A, its interval and McNemar's p, in one phrase."""
    low, high = result["difference_95_interval"]
    return (f"{100 * result['difference_b_minus_a']:+.2f} points (95% interval {100 * low:+.2f} to {100 * high:+.2f}), "
            f"McNemar p = {result['mcnemar_exact_p']:.2g} on {result['only_a_right'] + result['only_b_right']:,} "
            "disagreements")  # fmt: skip


def compare(args) -> dict:
    from trainers.evaluate import load_target

    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}; expected a positive integer")
    if args.output and not pathlib.Path(args.output).expanduser().resolve().parent.is_dir():
        raise UserError(f"--output {args.output}: its folder does not exist")  # said before minutes of evaluation
    model_a, path_a, config_a, _ = load_target(args.a, args.which)
    model_b, path_b, config_b, _ = load_target(args.b, args.which)
    counts = paired(model_a, config_a, model_b, config_b, dataset=args.dataset, data_dir=args.data_dir,
                    split=args.split, view=args.view, batch_size=args.batch_size)  # fmt: skip
    result = {"a": str(path_a), "b": str(path_b), **counts}
    n, view, both = result["images"], result["view"], result["both_right"]
    only_a, only_b, p_value = result["only_a_right"], result["only_b_right"], result["mcnemar_exact_p"]
    diff, (low, high) = result["difference_b_minus_a"], result["difference_95_interval"]
    if args.output:
        write_json_atomic(args.output, result)
    tag = " [SYNTHETIC DATA]" if result["synthetic"] else ""
    print(f"{n:,} images of {result['dataset']} {result['split']}, {view} at {result['image_size']}px{tag}")
    print(f"A {path_a.parent.name}/{path_a.name}: accuracy {100 * result['accuracy_a']:.2f}%")
    print(f"B {path_b.parent.name}/{path_b.name}: accuracy {100 * result['accuracy_b']:.2f}%")
    print(f"both right {both:,}, only A right {only_a:,}, only B right {only_b:,}, both wrong {result['both_wrong']:,}")
    print(f"B - A: {100 * diff:+.2f} points (95% interval for paired proportions: {100 * low:+.2f} to {100 * high:+.2f})")
    verdict = "a difference at the 5% level" if p_value < 0.05 else "not a difference at the 5% level"
    print(f"McNemar's exact test on the {only_a + only_b:,} images they disagree on: two-sided p = {p_value:.3g}, "
          f"{verdict}")  # fmt: skip
    if args.output:
        print(f"written: {args.output}")
    return result


def main(argv=None):
    return compare(build_parser().parse_args(argv))


if __name__ == "__main__":
    run_main(main)
