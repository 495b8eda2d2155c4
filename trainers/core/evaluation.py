"""Scoring trained models on a dataset's test split: top-1 and top-k error in
one or more views (:func:`evaluate`, behind ``trainers/evaluate.py``), and two
models scored image by image on the same images with a paired test
(:func:`paired`, :func:`compare`, behind ``trainers/compare.py``).

Views: the single centre crop at the training size (CIFAR: the image itself)
the centre crop and its mirror image ("flip": test-time flip, softmax
averaged), and the paper's 10-crop (corners and centre of the image resized to
shorter side 256, scaled to the training size, and their flips; softmax
averaged).
"""

from __future__ import annotations

import math
import pathlib

import keras
import numpy as np

from trainers.core import data as data_lib
from trainers.core import report as report_lib
from trainers.core.errors import UserError, write_failed
from trainers.core.files import write_json_atomic
from trainers.core.sources import Trained, is_named, load_trained, named_results_dir

VIEWS = ("single", "flip", "10-crop")


# ------------------------------------------------------------------ scoring
def load_for_evaluation(source, which: str = "final") -> Trained:
    """:func:`load_trained` for evaluation: shipped weights have no best model."""
    if is_named(source) and which == "best":
        raise UserError(f"--which best: {source} is one set of weights, not a run with a best epoch")
    return load_trained(source, which=which)


def dataset_for(model, config: dict, dataset: str | None, data_dir: str | None):
    """The DataInfo ``model`` is evaluated on: ``dataset`` (default the run's)
    read as the run read it (its family, validation hold-out and seed) where it
    is the run's own, at the model's input size."""
    dataset = dataset or config.get("dataset")
    if dataset is None:
        raise UserError("--dataset is required when evaluating a .keras file outside a run directory")
    image_size = model.input_shape[1]
    if image_size is None:
        raise UserError("the model has a variable input size; evaluate it at a fixed size")
    family = config.get("family") or ("cifar" if image_size <= 64 else "imagenet")
    same_data = dataset == config.get("dataset")
    info = data_lib.describe(
        dataset,
        data_dir=data_dir or (config.get("data_dir") if same_data else None),
        family=family,
        image_size=image_size,
        val_split=config.get("val_split", 0.0) if same_data else 0.0,
        seed=config.get("seed", 0),
        synthetic_classes=config.get("synthetic_classes", 10),
        synthetic_train=config.get("synthetic_train", 4096),
        synthetic_test=config.get("synthetic_test", 1024),
        jpeg_quality=config.get("jpeg_quality") if same_data else None,
        # A run that skipped undecodable files is evaluated on the files it kept.
        skip_bad_images=bool(config.get("skip_bad_images")) if same_data else False,
        max_bad_fraction=config.get("max_bad_fraction") if same_data else None,
    )
    if info.num_classes != model.output_shape[-1]:
        outputs = model.output_shape[-1]
        raise UserError(f"the model has {outputs} outputs but {dataset!r} has {info.num_classes} classes")
    return info


def single_view(info) -> str:
    """The name of the one-view evaluation: CIFAR's image itself, or the centre crop."""
    return "original" if info.style == "cifar" else "centre crop"


def view_pipeline(info, view: str, split: str, batch_size: int, seed: int = 0):
    if view == "10-crop":
        return data_lib.ten_crop_pipeline(info, split, batch_size)
    if view == "flip":
        return data_lib.flip_pipeline(info, split, batch_size, seed=seed)
    return data_lib.eval_pipeline(info, split, batch_size, seed=seed)


def score(model, ds, *, k: int, per_image: list | None = None, collector=None) -> tuple[int, int, int]:
    """Top-1 hits, top-k hits and images of ``model`` on ``ds``: batches of
    one view per image (N, S, S, 3), or of several, (N, V, S, S, 3), whose
    softmax outputs are averaged. With ``per_image``, appends (label, top-1
    class) for every image, in order; with ``collector`` (a
    :class:`trainers.core.report.Collector`), adds every batch's images,
    labels and softmax outputs to it (the per-class report)."""
    top1 = topk = count = 0
    softmax_out = report_lib.outputs_probabilities(model)
    for images, labels in ds.as_numpy_iterator():
        if images.ndim == 5:
            n, views = images.shape[:2]
            logits = model.predict_on_batch(images.reshape((-1,) + images.shape[2:]))
            probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits)).reshape(n, views, -1).mean(axis=1)
        else:
            probs = keras.ops.convert_to_numpy(model.predict_on_batch(images))  # logits: ranked as the softmax
        ranked = np.argsort(-probs, axis=-1)[:, :k]
        if per_image is not None:
            per_image.extend(zip(labels.tolist(), ranked[:, 0].tolist()))
        if collector is not None:
            collector.add(images, labels, probs if images.ndim == 5 or softmax_out else report_lib.softmax(probs))
        top1 += int(np.sum(ranked[:, 0] == labels))
        topk += int(np.sum(np.any(ranked == labels[:, None], axis=-1)))
        count += len(labels)
    return top1, topk, count


def results_dir(trained: Trained) -> pathlib.Path:
    """Where evaluation results go by default: the run directory, the folder of
    a .keras file, or a folder of saved_models/ for shipped or published
    weights (never into the package or a download cache)."""
    if trained.kind in ("shipped", "imagenet"):
        return named_results_dir(trained)
    return trained.run_dir if trained.kind == "run" else trained.path.parent


def report_folder(output, out_dir: pathlib.Path, name: str) -> pathlib.Path:
    """Where the per-class report of an evaluation goes: beside ``output``
    (``--output DIR/x.json``: DIR/x-report/), else ``out_dir``/``name``."""
    if output:
        output = pathlib.Path(output)
        return output.with_name(f"{output.stem}-report")
    return out_dir / name


def evaluate(
    source,
    *,
    which: str = "final",
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    ten_crop: bool = False,
    flip: bool = False,
    all_views: bool = False,
    batch_size: int = 100,
    output=None,
    report: bool = True,
) -> dict:
    """Top-1 and top-k error of the trained model ``source`` (any source
    :func:`load_trained` reads) on ``split``, in the single view, the centre
    crop and its mirror (``flip``), the 10-crop (``ten_crop``) or all three
    (``all_views``); printed, and written as JSON to ``output`` (default:
    eval-<which>-<split>[-flip|-10crop|-views].json in :func:`results_dir`).

    With ``report`` (the default), the single view (alone or in
    ``all_views``) also gets the per-class report (:mod:`trainers.core.report`):
    its balanced accuracy, macro-F1 and worst class printed beside top-1 and
    added to the JSON, and its folder written (report-<which>-<split>/ beside
    the JSON, or <output's stem>-report/ beside ``output``)."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}; expected a positive integer")
    trained = load_for_evaluation(source, which)
    model, model_path, config, out_dir = trained.model, trained.path, trained.config, results_dir(trained)
    info = dataset_for(model, config, dataset, data_dir)
    image_size = info.image_size

    k = min(5, info.num_classes)
    if ten_crop + flip + all_views > 1:
        raise UserError("give one of --ten-crop, --flip and --all-views")
    single = single_view(info)
    views = [single, "flip", "10-crop"] if all_views else ["10-crop" if ten_crop else "flip" if flip else single]
    scores = {}
    reported = None
    for view in views:
        ds = view_pipeline(info, view, split, batch_size, seed=config.get("seed", 0))
        collector = report_lib.Collector() if report and view == single else None
        top1, topk, count = score(model, ds, k=k, collector=collector)
        if count == 0:
            raise UserError(f"the {split} split of {info.name!r} is empty")
        scores[view] = {"images": count, "top1_error": 1 - top1 / count, f"top{k}_error": 1 - topk / count}
        if collector is not None:
            reported = (
                view,
                collector,
                report_lib.class_report(collector.labels, collector.predictions, info.class_names),
            )
            scores[view].update(report_lib.key_figures(reported[2]))
    result = {
        "model": str(model_path),
        "dataset": info.name,
        "synthetic": info.synthetic,
        "split": info.test_split if split == "test" else "val",
        "image_size": image_size,
    }
    if all_views:
        result["views"] = scores
    else:
        result.update(view=views[0], **scores[views[0]])
    suffix = "-views" if all_views else "-10crop" if ten_crop else "-flip" if flip else ""
    stem = f"{which if trained.kind in ('run', 'shipped') else model_path.stem}-{split}"
    target = pathlib.Path(output) if output else out_dir / f"eval-{stem}{suffix}.json"
    if not output and not out_dir.exists():  # shipped weights: their results folder under saved_models/
        try:
            out_dir.mkdir(parents=True)
        except OSError as error:
            raise write_failed(out_dir, error) from None
    tag = " [SYNTHETIC DATA]" if info.synthetic else ""
    if reported is not None:
        view, collector, figures = reported
        folder = report_folder(output, out_dir, f"report-{stem}")
        context = {key: result[key] for key in ("model", "dataset", "synthetic", "split", "image_size")}
        title = f"{model_path.name} on {info.name} {result['split']} ({view} at {image_size}px){tag}"
        report_lib.write_report(folder, figures, collector.mistakes(), title=title, context={**context, "view": view})
        result["report"] = str(folder)
    write_json_atomic(target, result)
    for view, figures in scores.items():
        per_class = f"; {report_lib.summary_line(figures)}" if reported is not None and view == reported[0] else ""
        print(
            f"{model_path.name} on {info.name} {result['split']} ({view} at {image_size}px, {figures['images']} "
            f"images){tag}: top-1 error {100 * figures['top1_error']:.2f}% (accuracy "
            f"{100 * (1 - figures['top1_error']):.2f}%), top-{k} error {100 * figures[f'top{k}_error']:.2f}%"
            + per_class
        )
    print(f"written: {target}")
    if reported is not None:
        print(f"per-class report: {result['report']}/ ({', '.join(report_lib.FILES)})")
    return result


# --------------------------------------------------------------- comparison
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
    """(label, top-1 class) of every image of ``split``, in order."""
    pairs: list = []
    ds = view_pipeline(info, view, split, batch_size, seed=seed)
    score(model, ds, k=1, per_image=pairs)
    return pairs


def paired(
    model_a,
    config_a: dict,
    model_b,
    config_b: dict,
    *,
    dataset=None,
    data_dir=None,
    split="test",
    view="single",
    batch_size=100,
) -> dict:
    """A and B scored image by image on the same images: the four counts,
    the accuracies, B - A with its 95% interval, McNemar's exact p."""
    if not dataset and config_a.get("dataset") != config_b.get("dataset"):
        raise UserError(
            f"A was trained on {config_a.get('dataset')!r} and B on {config_b.get('dataset')!r}: "
            "give --dataset to compare both on one"
        )
    if model_a.input_shape[1:] != model_b.input_shape[1:]:
        raise UserError(
            f"A takes {model_a.input_shape[1:]} and B {model_b.input_shape[1:]} images: "
            "a paired comparison needs the same images"
        )
    info_a = dataset_for(model_a, config_a, dataset, data_dir)
    info_b = dataset_for(model_b, config_b, dataset, data_dir)
    for what in ("num_classes", "test_split", "num_test", "num_val"):
        if getattr(info_a, what) != getattr(info_b, what):
            raise UserError(
                f"A and B read {info_a.name!r} differently ({what}: {getattr(info_a, what)} against "
                f"{getattr(info_b, what)}): they were trained with different data settings"
            )
    view = view if view in ("flip", "10-crop") else single_view(info_a)
    pred_a = predictions(model_a, info_a, view, split, batch_size, config_a.get("seed", 0))
    pred_b = predictions(model_b, info_b, view, split, batch_size, config_b.get("seed", 0))
    if not pred_a:
        raise UserError(f"the {split} split of {info_a.name!r} is empty")
    if [label for label, _ in pred_a] != [label for label, _ in pred_b]:
        raise UserError(
            "A's and B's evaluations did not see the same images in the same order "
            "(their runs hold out different validation images: different seeds?)"
        )
    right_a = [label == guess for label, guess in pred_a]
    right_b = [label == guess for label, guess in pred_b]
    n = len(right_a)
    both = sum(a and b for a, b in zip(right_a, right_b))
    only_a = sum(a and not b for a, b in zip(right_a, right_b))
    only_b = sum(b and not a for a, b in zip(right_a, right_b))
    diff, low, high = paired_difference(only_a, only_b, n)
    return {
        "dataset": info_a.name,
        "synthetic": info_a.synthetic,
        "image_size": info_a.image_size,
        "split": info_a.test_split if split == "test" else "val",
        "view": view,
        "images": n,
        "accuracy_a": sum(right_a) / n,
        "accuracy_b": sum(right_b) / n,
        "both_right": both,
        "only_a_right": only_a,
        "only_b_right": only_b,
        "both_wrong": n - both - only_a - only_b,
        "difference_b_minus_a": diff,
        "difference_95_interval": [low, high],
        "mcnemar_exact_p": mcnemar_exact(only_a, only_b),
    }


def paired_words(result: dict) -> str:
    """B - A, its interval and McNemar's p, in one phrase."""
    low, high = result["difference_95_interval"]
    disagreements = result["only_a_right"] + result["only_b_right"]
    return (
        f"{100 * result['difference_b_minus_a']:+.2f} points (95% interval {100 * low:+.2f} to "
        f"{100 * high:+.2f}), McNemar p = {result['mcnemar_exact_p']:.2g} on {disagreements:,} disagreements"
    )


def compare(
    a,
    b,
    *,
    which: str = "final",
    view: str = "single",
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: int = 100,
    output=None,
) -> dict:
    """Two trained models (any sources :func:`load_trained` reads) scored image
    by image on the same images (:func:`paired`); printed, and written as JSON
    to ``output`` where given."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}; expected a positive integer")
    if output and not pathlib.Path(output).expanduser().resolve().parent.is_dir():
        raise UserError(f"--output {output}: its folder does not exist")  # said before minutes of evaluation
    trained_a = load_for_evaluation(a, which)
    trained_b = load_for_evaluation(b, which)
    path_a, path_b = trained_a.path, trained_b.path
    counts = paired(
        trained_a.model,
        trained_a.config,
        trained_b.model,
        trained_b.config,
        dataset=dataset,
        data_dir=data_dir,
        split=split,
        view=view,
        batch_size=batch_size,
    )
    result = {"a": str(path_a), "b": str(path_b), **counts}
    n, view, both = result["images"], result["view"], result["both_right"]
    only_a, only_b, p_value = result["only_a_right"], result["only_b_right"], result["mcnemar_exact_p"]
    diff, (low, high) = result["difference_b_minus_a"], result["difference_95_interval"]
    if output:
        write_json_atomic(output, result)
    tag = " [SYNTHETIC DATA]" if result["synthetic"] else ""
    print(f"{n:,} images of {result['dataset']} {result['split']}, {view} at {result['image_size']}px{tag}")
    print(f"A {path_a.parent.name}/{path_a.name}: accuracy {100 * result['accuracy_a']:.2f}%")
    print(f"B {path_b.parent.name}/{path_b.name}: accuracy {100 * result['accuracy_b']:.2f}%")
    print(f"both right {both:,}, only A right {only_a:,}, only B right {only_b:,}, both wrong {result['both_wrong']:,}")
    print(
        f"B - A: {100 * diff:+.2f} points (95% interval for paired proportions: {100 * low:+.2f} to {100 * high:+.2f})"
    )
    verdict = "a difference at the 5% level" if p_value < 0.05 else "not a difference at the 5% level"
    print(
        f"McNemar's exact test on the {only_a + only_b:,} images they disagree on: two-sided p = {p_value:.3g}, "
        f"{verdict}"
    )
    if output:
        print(f"written: {output}")
    return result
