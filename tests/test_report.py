"""The per-class report (trainers/core/report.py): its numbers against a
hand-computed confusion matrix, strict JSON in degenerate cases, the CSV, both
PNGs at 3 and 100 classes, the heap of confident mistakes; and its wiring:
evaluate.py's report folder and line, --no-report, and a fit.py run's report/
and metrics.json keys (a mixup run: one-hot test labels)."""

import contextlib
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from trainers import evaluate, fit
from trainers.core import report
from trainers.core.errors import UserError

NAMES = ["cat", "dog", "bird"]
# cat: 4 images, dog: 3, bird: 2 and never predicted.
LABELS = [0, 0, 0, 0, 1, 1, 1, 2, 2]
PREDICTED = [0, 0, 0, 1, 1, 1, 0, 0, 1]
MATRIX = [[3, 1, 0], [1, 2, 0], [1, 1, 0]]


def _strict_json(path):
    """The JSON in ``path``, refusing NaN and infinities as a strict reader does."""

    def refuse(constant):
        raise ValueError(f"{constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _png(path):
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as image:
        image.load()
        return image.size


# -------------------------------------------------------------------- numbers
def test_the_numbers_match_a_hand_computed_confusion_matrix():
    r = report.class_report(LABELS, PREDICTED, NAMES)
    assert r["confusion"]["matrix"] == MATRIX and r["images"] == 9 and r["classes"] == 3
    rows = {row["class"]: row for row in r["per_class"]}
    assert [rows[n]["support"] for n in NAMES] == [4, 3, 2]
    assert [rows[n]["predicted"] for n in NAMES] == [5, 4, 0]
    assert [rows[n]["correct"] for n in NAMES] == [3, 2, 0]
    assert rows["cat"]["precision"] == pytest.approx(3 / 5) and rows["dog"]["precision"] == pytest.approx(2 / 4)
    assert rows["bird"]["precision"] is None and rows["bird"]["why"] == {"precision": "never predicted"}
    assert [rows[n]["recall"] for n in NAMES] == pytest.approx([3 / 4, 2 / 3, 0])
    # F1: the harmonic mean of precision and recall; 0 for a class with images that is never predicted.
    assert rows["cat"]["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert rows["dog"]["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert rows["bird"]["f1"] == 0
    assert "why" not in rows["cat"] and "why" not in rows["dog"]
    assert r["top1_accuracy"] == pytest.approx(5 / 9) and r["top1_error"] == pytest.approx(4 / 9)
    assert r["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 0) / 3)
    assert r["macro_f1"] == pytest.approx((2 / 3 + 4 / 7 + 0) / 3)
    assert (r["worst_class"], r["worst_class_recall"]) == ("bird", 0)
    assert r["classes_never_predicted"] == ["bird"] and r["classes_without_images"] == []
    # The off-diagonal cells, the largest first (ties in matrix order); never a diagonal cell.
    assert [(c["true"], c["predicted"], c["count"]) for c in r["most_confused"]] == [
        ("cat", "dog", 1),
        ("dog", "cat", 1),
        ("bird", "cat", 1),
        ("bird", "dog", 1),
    ]
    assert report.key_figures(r) == {
        "balanced_accuracy": r["balanced_accuracy"],
        "macro_f1": r["macro_f1"],
        "worst_class": "bird",
        "worst_class_recall": 0.0,
    }
    assert report.summary_line(r) == "balanced accuracy 47.22%, macro-F1 41.27%, worst class bird (recall 0.00%)"


def test_the_numbers_agree_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    r = report.class_report(LABELS, PREDICTED, NAMES)
    assert metrics.confusion_matrix(LABELS, PREDICTED).tolist() == MATRIX
    assert r["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(LABELS, PREDICTED))
    assert r["macro_f1"] == pytest.approx(metrics.f1_score(LABELS, PREDICTED, average="macro", zero_division=0))


def test_degenerate_classes_are_null_with_a_reason_and_the_json_strict(tmp_path):
    # "c" has no images but is predicted once; "d" has neither.
    r = report.class_report([0, 0, 1], [0, 2, 1], ["a", "b", "c", "d"])
    rows = {row["class"]: row for row in r["per_class"]}
    assert (rows["c"]["precision"], rows["c"]["recall"], rows["c"]["f1"]) == (0, None, 0)
    assert rows["c"]["why"] == {"recall": "no images of this class"}
    assert (rows["d"]["precision"], rows["d"]["recall"], rows["d"]["f1"]) == (None, None, None)
    assert set(rows["d"]["why"]) == {"precision", "recall", "f1"}
    assert r["balanced_accuracy"] == pytest.approx(0.75)  # over the classes with images
    assert r["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # over those with images or predictions
    assert r["classes_without_images"] == ["c", "d"] and r["classes_never_predicted"] == ["d"]
    report.write_report(tmp_path / "degenerate", r, [], title="degenerate", context={"split": "test"})
    written = _strict_json(tmp_path / "degenerate" / "report.json")
    assert "NaN" not in (tmp_path / "degenerate" / "report.json").read_text()
    assert written["split"] == "test" and written["per_class"] == r["per_class"]
    assert written["confusion"] == r["confusion"] and written["confident_mistakes"] == []
    assert "null" in written["conventions"]

    # All right: no mistakes (the PNG says so); one image of one class.
    perfect = report.class_report([1], [1], ["a", "b"])
    assert perfect["balanced_accuracy"] == 1 and perfect["macro_f1"] == 1 and perfect["worst_class"] == "b"
    report.write_report(tmp_path / "perfect", perfect, [])
    assert _strict_json(tmp_path / "perfect" / "report.json")["per_class"][0]["f1"] is None
    _png(tmp_path / "perfect" / "confident_mistakes.png")

    with pytest.raises(UserError, match="no images"):
        report.class_report([], [], ["a"])
    with pytest.raises(ValueError, match="outside the 2 classes"):
        report.class_report([0, 2], [0, 0], ["a", "b"])


def test_the_csv_has_a_header_of_class_names_and_a_row_per_true_class(tmp_path):
    names = ["cat", "dog, big", "bird"]  # a comma in a name is quoted
    report.write_report(tmp_path, report.class_report(LABELS, PREDICTED, names), [])
    with open(tmp_path / "confusion.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", *names]
    assert rows[1:] == [[name, *map(str, counts)] for name, counts in zip(names, MATRIX)]
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary file left


# ------------------------------------------------------------ the mistakes
def test_the_heap_keeps_the_most_confident_mistakes_in_order():
    rng = np.random.default_rng(0)
    collector = report.Collector(keep=5)
    all_labels, all_probs = [], []
    for batch in range(4):
        n, classes = 30, 4
        labels = rng.integers(0, classes, n)
        probs = report.softmax(rng.normal(size=(n, classes)) * 3)
        probs[0] = probs[1]  # a tie in confidence
        index = batch * n + np.arange(n)
        images = np.broadcast_to((index % 256).astype(np.float32)[:, None, None, None], (n, 8, 8, 3))
        given = np.eye(classes)[labels] if batch % 2 else labels  # one-hot labels (a mixup run's) are read too
        collector.add(images, given, probs)
        all_labels.append(labels)
        all_probs.append(probs)
    labels, probs = np.concatenate(all_labels), np.concatenate(all_probs)
    top1, confidence = probs.argmax(-1), probs.max(-1).astype(np.float32)
    np.testing.assert_array_equal(collector.labels, labels)
    np.testing.assert_array_equal(collector.predictions, top1)
    np.testing.assert_allclose(collector.confidences, confidence)
    wrong = [i for i in range(len(labels)) if top1[i] != labels[i]]
    expected = sorted(wrong, key=lambda i: (-confidence[i], i))[:5]
    mistakes = collector.mistakes()
    assert [m["index"] for m in mistakes] == expected
    for m in mistakes:
        assert m["image"].dtype == np.uint8 and m["image"].shape == (8, 8, 3)
        assert (m["image"] == m["index"] % 256).all()  # each kept image is its own
        assert (m["label"], m["predicted"]) == (labels[m["index"]], top1[m["index"]])

    # A multi-view batch keeps the view asked for.
    views = report.Collector(keep=1, view=1)
    images = np.stack([np.zeros((1, 4, 4, 3)), np.full((1, 4, 4, 3), 200.4)], axis=1)  # (1, 2, 4, 4, 3)
    views.add(images, np.array([0]), np.array([[0.1, 0.9]]))
    (only,) = views.mistakes()
    assert only["confidence"] == pytest.approx(0.9) and (only["image"] == 200).all()


def _collector(classes, images=1000, size=24, seed=0):
    rng = np.random.default_rng(seed)
    collector = report.Collector()
    for _ in range(images // 250):
        labels = rng.integers(0, classes, 250)
        logits = rng.normal(size=(250, classes))
        logits[np.arange(250), labels] += 2.5
        collector.add(rng.uniform(0, 255, (250, size, size, 3)).astype(np.float32), labels, report.softmax(logits))
    return collector


@pytest.mark.parametrize("classes", [3, 100])
def test_both_pngs_are_written_and_readable(tmp_path, classes):
    names = [f"class {i}" for i in range(classes)] if classes > 3 else NAMES
    folder = tmp_path / "report"
    r = report.report_from(_collector(classes), names, folder, title="synthetic labels, no model")
    assert sorted(p.name for p in folder.iterdir()) == sorted(report.FILES)
    width, height = _png(folder / "confusion.png")
    if classes == 3:
        assert 400 <= width <= 1200 and 400 <= height <= 1200
    else:  # 100 classes: bigger, every name still a tick label
        assert width >= 2000 and height >= 2000 and max(width, height) <= 4000
    width, height = _png(folder / "confident_mistakes.png")
    assert 4 * 150 <= width <= 1600 and 4 * 150 <= height <= 2000  # a 4 x 4 grid
    written = _strict_json(folder / "report.json")
    assert len(written["confident_mistakes"]) == report.KEEP_MISTAKES
    assert (
        written["confusion"]["matrix"] == r["confusion"]["matrix"] and sum(map(sum, r["confusion"]["matrix"])) == 1000
    )
    confidences = [m["confidence"] for m in written["confident_mistakes"]]
    assert confidences == sorted(confidences, reverse=True)


# ------------------------------------------------------------------ wiring
@pytest.fixture(scope="module")
def mixup_run(tmp_path_factory):
    """A few-step ResNet-8 on 16x16 synthetic images, trained with mixup
    (its test labels are one-hot vectors)."""
    tmp = tmp_path_factory.mktemp("report")
    run_dir = tmp / "run"
    args = [
        "--arch",
        "resnet8",
        "--dataset",
        "synthetic",
        "--image-size",
        "16",
        "--synthetic-train",
        "256",
        "--synthetic-test",
        "200",
        "--batch-size",
        "32",
        "--steps",
        "8",
        "--mixup",
        "0.2",
        "--precision",
        "float32",
        "--verbose",
        "2",
        "--output-dir",
        str(run_dir),
    ]
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("RESNET_KERAS_RUNS", str(tmp / "runs"))
        fit.main(args)
    return run_dir, out.getvalue()


def test_a_fit_run_writes_its_report_and_the_key_figures(mixup_run):
    run_dir, out = mixup_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    folder = run_dir / "report"
    assert sorted(p.name for p in folder.iterdir()) == sorted(report.FILES)
    written = _strict_json(folder / "report.json")
    assert written["images"] == 200 and written["split"] == "test" and written["synthetic"]
    assert written["top1_accuracy"] == pytest.approx(1 - metrics["test_top1_error"], abs=1e-6)
    for key in ("balanced_accuracy", "macro_f1", "worst_class", "worst_class_recall"):
        assert metrics[key] == written[key], key
    assert 0 <= metrics["worst_class_recall"] <= metrics["balanced_accuracy"] <= 1
    assert metrics["worst_class"] in written["class_names"]
    line = next(line for line in out.splitlines() if "per-class report on test" in line)
    assert "balanced accuracy" in line and "worst class" in line and str(folder) in line


def test_evaluate_writes_the_report_and_prints_it_beside_top1(mixup_run, capsys):
    run_dir, _ = mixup_run
    result = evaluate.main([str(run_dir), "--batch-size", "64"])
    folder = run_dir / "report-final-test"
    assert result["report"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(report.FILES)
    written = _strict_json(folder / "report.json")
    assert written["view"] == "original" and written["images"] == result["images"] == 200
    assert written["top1_error"] == pytest.approx(result["top1_error"])
    assert result["balanced_accuracy"] == written["balanced_accuracy"]
    # The same model on the same images as the run's own report.
    assert written["confusion"] == _strict_json(run_dir / "report" / "report.json")["confusion"]
    assert _strict_json(run_dir / "eval-final-test.json") == result
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "top-1 error" in line]
    assert "balanced accuracy" in line and "macro-F1" in line and "worst class" in line


def test_no_report_writes_none_and_output_puts_it_beside(mixup_run, tmp_path, capsys):
    run_dir, _ = mixup_run
    plain = evaluate.main([str(run_dir), "--no-report", "--output", str(tmp_path / "plain.json")])
    assert "report" not in plain and "balanced_accuracy" not in plain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.json"]
    assert "balanced accuracy" not in capsys.readouterr().out
    beside = evaluate.main([str(run_dir), "--output", str(tmp_path / "with.json")])
    assert beside["report"] == str(tmp_path / "with-report")
    assert sorted(p.name for p in (tmp_path / "with-report").iterdir()) == sorted(report.FILES)
