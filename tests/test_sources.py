"""trainers.core.sources.load_trained: the one door for trained models. Each
kind of source loads with what is known about it; each bad one is refused in
one line."""

import json

import numpy as np
import pytest

import resnet_keras
from trainers import fit
from trainers.core.errors import UserError
from trainers.core.sources import KINDS, Trained, load_trained

# The tiny settings of tests/test_pretrained.py's shipped run: 4 iterations of a resnet8 on 128 synthetic images.
TINY = (
    "--arch resnet8 --dataset synthetic --synthetic-train 128 --synthetic-test 64 --batch-size 32 --steps 4 "
    "--precision float32 --verbose 0"
).split()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A resnet8 trained 4 iterations on 128 synthetic images (a finished run directory)."""
    tmp = tmp_path_factory.mktemp("sources")
    run = tmp / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNET_KERAS_RUNS", str(tmp / "runs"))
        fit.main([*TINY, "--output-dir", str(run)])
    return run


def _same_weights(a, b):
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def _refused(match, source, **kwargs):
    with pytest.raises(UserError, match=match) as info:
        load_trained(source, **kwargs)
    assert "\n" not in str(info.value)  # one line
    return str(info.value)


def test_a_run_directory_gives_its_final_or_best_model_and_its_config(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    final = load_trained(run_dir)
    assert isinstance(final, Trained) and final.kind == "run" and final.source == run_dir
    assert final.path == run_dir / "model.keras" and final.run_dir == run_dir and final.which == "final"
    assert final.config == config and final.class_names == config["class_names"]
    assert final.dataset == "synthetic" and final.family == "cifar" and final.image_size == 32
    assert final.model.output_shape[-1] == len(final.class_names) == 10
    best = load_trained(str(run_dir), which="best")
    assert best.path == run_dir / "best.keras" and best.which == "best" and best.kind == "run"


def test_a_keras_file_reads_the_run_config_beside_it_or_none(run_dir, tmp_path):
    inside = load_trained(run_dir / "best.keras")
    assert inside.kind == "keras" and inside.run_dir == run_dir and inside.which == "best"
    assert inside.class_names == load_trained(run_dir).class_names and inside.dataset == "synthetic"
    bare_path = tmp_path / "bare.keras"
    bare_path.write_bytes((run_dir / "model.keras").read_bytes())
    bare = load_trained(bare_path)
    assert bare.kind == "keras" and bare.run_dir is None and bare.config == {} and bare.which is None
    assert bare.class_names is None and bare.dataset is None and bare.family == "cifar" and bare.image_size == 32
    _same_weights(bare.model, load_trained(run_dir).model)


def test_a_weights_file_loads_into_a_network_like_the_target(run_dir, tmp_path):
    source = load_trained(run_dir).model
    path = tmp_path / "w.weights.h5"
    source.save_weights(path)
    like = resnet_keras.get_model("resnet8", num_classes=4, seed=1)
    trained = load_trained(path, like=like)
    assert trained.kind == "weights" and trained.path == path and trained.run_dir is None and trained.config == {}
    assert trained.class_names is None and trained.family == "cifar"
    assert trained.model.output_shape[-1] == 10  # the file's classes, not the target's
    _same_weights(trained.model, source)


def test_shipped_weights_come_with_their_manifest_entry():
    trained = load_trained("weights:resnet20/cifar10")
    entry = resnet_keras.pretrained.find_weights("resnet20", "cifar10")
    assert trained.kind == "shipped" and trained.source == "weights:resnet20/cifar10" and trained.run_dir is None
    assert trained.path == resnet_keras.pretrained.WEIGHTS_DIR / entry["file"]
    assert trained.config["shipped"] == "resnet20/cifar10" and trained.class_names == entry["class_names"]
    assert trained.dataset == entry["tfds_name"] and trained.family == "cifar" and trained.image_size == 32
    assert set(KINDS) == {"run", "keras", "weights", "applications", "shipped", "imagenet"}


def test_every_bad_source_is_refused_in_one_line(run_dir, tmp_path):
    _refused("no model at .*: no such file or directory", tmp_path / "missing.keras")
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(r"is not a run directory \(no config.json\)", empty)

    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes((run_dir / "model.keras").read_bytes()[:3000])
    _refused(r"is not a (loadable )?\.keras model", truncated)

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text('{"class_names": ["a",')
    (corrupt / "model.keras").write_bytes((run_dir / "model.keras").read_bytes())
    _refused("the run configuration .* is not valid JSON", corrupt)
    _refused("the run configuration .* is not valid JSON", corrupt / "model.keras")

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "class_names": ["a", "b", "c"]}))
    (wrong / "model.keras").write_bytes((run_dir / "model.keras").read_bytes())
    _refused(r"model.keras has 10 outputs but 3 class names", wrong)

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((run_dir / "config.json").read_text())
    _refused(r"no model at .*model.keras: the run has no model.keras", unfinished)

    _refused("weights='nope' do not exist for 'resnet20'", "weights:resnet20/nope")
    _refused("shipped weights are named weights:ARCH/NAME", "weights:resnet20")
    _refused(r"not a trained model; expected a run directory of fit.py, a .keras file", run_dir / "history.csv")
    weights = tmp_path / "w.weights.h5"
    load_trained(run_dir).model.save_weights(weights)
    _refused(r"holds weights only, not a network: start a run from it with fit.py --init-from", weights)
    applications = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    applications.write_bytes(b"")
    _refused(r"a keras.applications weights file \(.h5\) holds weights only", applications)
    _refused(
        "fits resnet50/101/152 only, not 'resnet8'",
        applications,
        like=resnet_keras.get_model("resnet8", num_classes=10),
    )
    _refused("these weights do not fit 'resnet14'", weights, like=resnet_keras.get_model("resnet14", num_classes=10))
    _refused("which='last'; expected 'final' or 'best'", run_dir, which="last")
