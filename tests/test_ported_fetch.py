"""Issue 39: the ImageNet class names, fetching a catalog entry's weights (=PATH, the Hugging Face cache and Hub, the
torch hub cache and URL, kagglehub) and loading them through ``load_imagenet`` and ``get_model(weights=...)``.

No network and no torch: every client (``fetch.hf_hub_download``, ``hub_sha256``, ``url_download``,
``kaggle_model_download``) is replaced by a function that writes or returns local files, or raises as the real one
does offline. The weights are synthesized from a randomly initialised network of ours, named and shaped as the
sources name them (``mapping.torch_names`` and ``mapping.keras_hub_name``), written as a ``.safetensors`` file, a
torch.save zip (the torch-free writer of ``test_ported_readers``) and a keras-hub preset folder saved by Keras.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import urllib.error

import h5py
import keras
import numpy as np
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.numpy import save_file
from test_ported_readers import _Storage, _Tensor, one_line, write_torch_zip

from benchmarks import make_imagenet_classes
from resnet_keras import get_model, get_normalization, imagenet_class_names, imagenet_wnids, load_imagenet
from resnet_keras.ported import catalog, classes, fetch, mapping, presets

SIZE = 64
TIMM = "timm:resnet18.a1_in1k"
TV = "torchvision:resnet18"
KH = "keras-hub:resnet_18_imagenet"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Every client fails loudly unless a test replaces it."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test reached a network client with {args}")

    for client in ("hf_hub_download", "hub_sha256", "url_download", "kaggle_model_download"):
        monkeypatch.setattr(fetch, client, refuse)


# --- class names ------------------------------------------------------------------------------------------------------
def test_imagenet_class_names_and_wnids():
    names, wnids = imagenet_class_names(), imagenet_wnids()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[999]) == ("tench", "toilet tissue")
    assert (names[134], names[517], names[638], names[639]) == ("crane bird", "crane", "maillot", "maillot tank suit")
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert (wnids[0], wnids[999]) == ("n01440764", "n15075141")
    assert hashlib.sha256(classes.CLASSES_FILE.read_bytes()).hexdigest() == classes.CLASSES_SHA256
    # The sources' own checksums (facts file, section 6): the vendored file carries exactly those lists.
    assert hashlib.sha256(("\n".join(names) + "\n").encode()).hexdigest() == make_imagenet_classes.NAMES_SHA256
    assert hashlib.sha256(("\n".join(wnids) + "\n").encode()).hexdigest() == make_imagenet_classes.WNIDS_SHA256
    assert make_imagenet_classes.table(names, wnids) == classes.CLASSES_FILE.read_bytes()


def test_an_edited_class_file_is_refused(tmp_path, monkeypatch):
    edited = tmp_path / "imagenet_classes.tsv"
    edited.write_bytes(classes.CLASSES_FILE.read_bytes().replace(b"\ttench\n", b"\ttinca\n"))
    monkeypatch.setattr(classes, "CLASSES_FILE", edited)
    classes._table.cache_clear()
    try:
        one_line(imagenet_class_names, "refused", str(edited), classes.CLASSES_SHA256)
    finally:
        classes._table.cache_clear()


def test_the_generator_refuses_sources_other_than_the_pinned(tmp_path):
    synsets = tmp_path / "imagenet_synsets.txt"
    synsets.write_text("\n".join(imagenet_wnids()) + "\n")
    assert make_imagenet_classes.read_wnids(synsets) == imagenet_wnids()
    synsets.write_text("\n".join(imagenet_wnids()[::-1]) + "\n")
    with pytest.raises(SystemExit, match="refused"):
        make_imagenet_classes.read_wnids(synsets)
    meta = tmp_path / "_meta.py"
    names = imagenet_class_names()
    meta.write_text(f"_IMAGENET_CATEGORIES = {names!r}\n")
    assert make_imagenet_classes.read_names(meta) == names
    meta.write_text(f"_IMAGENET_CATEGORIES = {[n.upper() for n in names]!r}\n")
    with pytest.raises(SystemExit, match="refused"):
        make_imagenet_classes.read_names(meta)


# --- synthesized weights ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    """timm's resnet18 as catalog.build makes it, with random weights and BN statistics: the network whose
    weights every file below holds."""
    model = catalog.build(catalog.parse(TIMM), seed=3)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)]
            )
    logits = model.get_layer("logits")
    logits.bias.assign(rng.normal(0, 0.2, logits.bias.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def expected(reference, images):
    return np.asarray(reference(images, training=False))


def torch_state(model) -> dict:
    """The model's weights as a torchvision/timm state dict: their key names, layouts and num_batches_tracked."""
    state = {}
    for path, (key, transform) in mapping.torch_names(model).items():
        layer_name, attribute = path.split("/")
        value = np.asarray(getattr(model.get_layer(layer_name), attribute)).astype(np.float32)
        if transform == mapping.CONV:
            value = np.transpose(value, (3, 2, 0, 1))  # HWIO -> OIHW
        elif transform == mapping.LINEAR:
            value = value.T
        state[key] = np.ascontiguousarray(value)
        if key.endswith(".running_var"):
            state[key.replace(".running_var", ".num_batches_tracked")] = np.array(10, np.int64)
    return state


@pytest.fixture(scope="module")
def state(reference):
    return torch_state(reference)


@pytest.fixture(scope="module")
def files(tmp_path_factory, state):
    root = tmp_path_factory.mktemp("weights")
    safetensors = root / "model.safetensors"
    save_file(state, safetensors, metadata={"format": "pt"})
    stand_ins = {}
    for i, (key, array) in enumerate(state.items()):
        marker = "LongStorage" if array.dtype == np.int64 else "FloatStorage"
        strides = tuple(int(s) // array.itemsize for s in array.strides)
        stand_ins[key] = _Tensor(_Storage(str(i), marker, array), 0, array.shape, strides)
    pth = write_torch_zip(root / "resnet18-f37072fd.pth", stand_ins, prefix="resnet18-f37072fd")
    return {"safetensors": safetensors, "pth": pth}


def keras_hub_resnet18():
    """keras-hub 0.32.0's ResNetBackbone graph for resnet_18 (basic_block, models/resnet/resnet_backbone.py), with
    its layer names, written here from keras-hub's code: layers created and connected in its order."""
    layers = keras.layers
    bn = dict(epsilon=1e-5, momentum=0.9)
    inputs = keras.Input((None, None, 3))
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, padding="valid", name="conv1_conv")(x)
    x = layers.BatchNormalization(**bn, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for s, filters in enumerate((64, 128, 256, 512)):
        for b in range(2):
            name, stride = f"stack{s}_block{b}", 2 if s > 0 and b == 0 else 1
            shortcut = x
            if b == 0 and s > 0:  # first_shortcut = block_type != "basic_block" or stack_index > 0
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
                shortcut = layers.BatchNormalization(**bn, name=f"{name}_0_bn")(shortcut)
            if stride > 1:
                x = layers.ZeroPadding2D(1, name=f"{name}_1_pad")(x)
            padding = "valid" if stride > 1 else "same"
            x = layers.Conv2D(filters, 3, strides=stride, padding=padding, use_bias=False, name=f"{name}_1_conv")(x)
            x = layers.BatchNormalization(**bn, name=f"{name}_1_bn")(x)
            x = layers.Activation("relu", name=f"{name}_1_relu")(x)
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(x)
            x = layers.BatchNormalization(**bn, name=f"{name}_2_bn")(x)
            x = layers.Add(name=f"{name}_add")([shortcut, x])
            x = layers.Activation("relu", name=f"{name}_out")(x)
    return keras.Model(inputs, x, name="res_net_backbone")


KERAS_HUB_RESNET18_CONFIG = {
    "module": "keras_hub.src.models.resnet.resnet_backbone",
    "class_name": "ResNetBackbone",
    "config": {
        "name": "res_net_backbone",
        "trainable": True,
        "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}},
        "input_conv_filters": [64],
        "input_conv_kernel_sizes": [7],
        "stackwise_num_filters": [64, 128, 256, 512],
        "stackwise_num_blocks": [2, 2, 2, 2],
        "stackwise_num_strides": [1, 2, 2, 2],
        "block_type": "basic_block",
        "use_pre_activation": False,
        "image_shape": [None, None, 3],
    },
    "registered_name": "keras_hub>ResNetBackbone",
}


@pytest.fixture(scope="module")
def preset(tmp_path_factory, reference):
    """A keras-hub preset folder of the reference's weights: config.json, model.weights.h5 saved by Keras from a
    functional model with keras-hub's layer names, task.weights.h5 holding the 'predictions' Dense."""
    folder = tmp_path_factory.mktemp("preset")
    backbone = keras_hub_resnet18()
    for layer in reference.layers:
        if layer.weights and layer.name not in ("normalization", "logits"):
            backbone.get_layer(mapping.keras_hub_name(layer.name)).set_weights(layer.get_weights())
    backbone.save_weights(folder / "model.weights.h5")
    features = keras.Input((512,))
    head = keras.Model(features, keras.layers.Dense(1000, name="predictions")(features))
    head.get_layer("predictions").set_weights(reference.get_layer("logits").get_weights())
    head.save_weights(folder / "task.weights.h5")
    (folder / "config.json").write_text(json.dumps(KERAS_HUB_RESNET18_CONFIG))
    return folder


def strip_names(src, dst, rename=None):
    """A copy of a Keras .weights.h5 whose vars groups carry no name attribute (as older Keras wrote them), or
    carry ``rename`` = {group: name} only."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        for group in f["layers"]:
            variables = f["layers"][group].get("vars")
            if variables is not None and "name" in variables.attrs:
                del variables.attrs["name"]
            if variables is not None and rename and group in rename:
                variables.attrs["name"] = rename[group]


# --- fetching: =PATH --------------------------------------------------------------------------------------------------
def test_a_path_that_does_not_exist_is_one_line(tmp_path):
    missing = tmp_path / "nope.safetensors"
    one_line(lambda: fetch.fetch(catalog.parse(f"{TIMM}={missing}")), str(missing), "does not exist")
    one_line(lambda: load_imagenet(f"{TV}={missing}"), "does not exist", "torchvision's resnet18-f37072fd.pth")
    one_line(lambda: get_model("resnet18", weights=f"{KH}={missing}"), "does not exist", "preset folder")


def test_a_path_given_as_a_file_or_a_folder(tmp_path, files):
    got = fetch.fetch(catalog.parse(f"{TIMM}={files['safetensors']}"))
    assert (got.path, got.origin) == (files["safetensors"], "path")
    assert got.check.startswith("none")
    assert fetch.weights_path(catalog.parse(f"{TIMM}={files['safetensors'].parent}")) == files["safetensors"]
    # A Hugging Face snapshot folder: model.safetensors links to blobs/<its sha256>, which is checked.
    digest = hashlib.sha256(files["safetensors"].read_bytes()).hexdigest()
    repo = tmp_path / "models--timm--resnet18.a1_in1k"
    (repo / "blobs").mkdir(parents=True)
    shutil.copyfile(files["safetensors"], repo / "blobs" / digest)
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    os.symlink(f"../../blobs/{digest}", repo / "snapshots" / "abc123" / "model.safetensors")
    got = fetch.fetch(catalog.parse(f"{TIMM}={repo / 'snapshots' / 'abc123'}"))
    assert got.path.name == "model.safetensors" and got.sha256 == digest and "blob" in got.check
    # torchvision: a file whose sha256 does not start with the published prefix is recorded, not refused.
    got = fetch.fetch(catalog.parse(f"{TV}={files['pth']}"))
    assert got.check.startswith("none passed") and "f37072fd" in got.check
    one_line(lambda: fetch.fetch(catalog.parse(f"{TV}={tmp_path}")), "holds no resnet18-f37072fd.pth")
    one_line(lambda: fetch.fetch(catalog.parse(f"{KH}={files['pth']}")), "is a file", "preset folder")
    one_line(lambda: fetch.fetch(catalog.parse(f"{KH}={tmp_path}")), "has no config.json or model.weights.h5")


# --- fetching: timm (Hugging Face) ------------------------------------------------------------------------------------
def hf_cache(tmp_path, data: bytes):
    """A Hugging Face cache entry: snapshots/<commit>/model.safetensors -> ../../blobs/<name>."""
    digest = hashlib.sha256(data).hexdigest()
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / digest).write_bytes(data)
    (repo / "snapshots" / "0123").mkdir(parents=True)
    link = repo / "snapshots" / "0123" / "model.safetensors"
    os.symlink(f"../../blobs/{digest}", link)
    return link, digest


def test_timm_from_the_hugging_face_cache(tmp_path, monkeypatch):
    link, digest = hf_cache(tmp_path, b"weights")
    calls = []

    def download(repo_id, filename, *, local_files_only):
        calls.append((repo_id, filename, local_files_only))
        return str(link)

    monkeypatch.setattr(fetch, "hf_hub_download", download)
    got = fetch.fetch(catalog.parse(TIMM))
    assert calls == [("timm/resnet18.a1_in1k", "model.safetensors", True)]  # the cache only: no network
    assert (got.path, got.origin, got.sha256) == (link, "cache", digest)
    assert "blob" in got.check
    (link.resolve()).write_bytes(b"damaged")
    one_line(lambda: fetch.fetch(catalog.parse(TIMM)), "refused", "damaged cache")


def test_timm_through_the_real_client_from_a_cache_offline(tmp_path, monkeypatch):
    """huggingface_hub's own hf_hub_download (local_files_only=True: no HTTP) finds the file in a cache laid out as
    it lays one out; the online call is replaced by one that fails as offline."""
    import huggingface_hub.constants

    monkeypatch.undo()
    real = fetch.hf_hub_download

    def cache_only(repo_id, filename, *, local_files_only):
        if not local_files_only:
            raise LocalEntryNotFoundError("offline")
        return real(repo_id, filename, local_files_only=True)

    monkeypatch.setattr(fetch, "hf_hub_download", cache_only)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    one_line(lambda: fetch.fetch(catalog.parse(TIMM)), "is not in the Hugging Face cache")
    link, digest = hf_cache(tmp_path, b"cached weights")
    (link.parents[2] / "refs").mkdir()
    (link.parents[2] / "refs" / "main").write_text("0123")
    got = fetch.fetch(catalog.parse(TIMM))
    assert (got.path.resolve(), got.origin, got.sha256) == (link.resolve(), "cache", digest)


def test_timm_downloaded_and_checked_against_the_hubs_sha256(tmp_path, monkeypatch):
    downloaded = tmp_path / "model.safetensors"
    downloaded.write_bytes(b"weights from the hub")
    digest = hashlib.sha256(downloaded.read_bytes()).hexdigest()
    calls = []

    def download(repo_id, filename, *, local_files_only):
        calls.append(local_files_only)
        if local_files_only:
            raise LocalEntryNotFoundError("not in the cache")
        return str(downloaded)

    monkeypatch.setattr(fetch, "hf_hub_download", download)
    monkeypatch.setattr(fetch, "hub_sha256", lambda repo_id, filename: digest)
    got = fetch.fetch(catalog.parse(TIMM))
    assert calls == [True, False]
    assert (got.path, got.origin, got.sha256) == (downloaded, "download", digest)
    assert got.check == f"sha256 {digest} equals the LFS sha256 the Hub publishes"
    monkeypatch.setattr(fetch, "hub_sha256", lambda repo_id, filename: "0" * 64)
    one_line(lambda: fetch.fetch(catalog.parse(TIMM)), "refused", digest, "0" * 64)


def test_timm_offline_and_not_cached_says_what_to_fetch(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)

    def download(repo_id, filename, *, local_files_only):
        raise LocalEntryNotFoundError("cannot reach the Hub and not in the cache")

    monkeypatch.setattr(fetch, "hf_hub_download", download)
    message = one_line(lambda: fetch.fetch(catalog.parse("timm:resnet50d.ra2_in1k")))
    assert message == (
        "timm:resnet50d.ra2_in1k is not in the Hugging Face cache and the Hub is unreachable: fetch "
        "https://huggingface.co/timm/resnet50d.ra2_in1k/resolve/main/model.safetensors and pass "
        "timm:resnet50d.ra2_in1k=/path/to/model.safetensors (or set HF_HOME to a cache that has it)"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_line(lambda: fetch.fetch(catalog.parse(TIMM)), "the Hub is unreachable (HF_HUB_OFFLINE is set)")


def test_timm_without_huggingface_hub_says_pip_install(monkeypatch):
    monkeypatch.undo()  # the real client, which imports huggingface_hub first
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    one_line(lambda: fetch.fetch(catalog.parse(TIMM)), "pip install huggingface_hub", f"{TIMM}=/path/to/")


# --- fetching: torchvision (torch hub) --------------------------------------------------------------------------------
def tv_entry(data: bytes, url="https://download.example/resnet18-x.pth"):
    """The torchvision resnet18 entry, its file name carrying the sha256 prefix of ``data`` (a real one cannot be
    forged)."""
    prefix = hashlib.sha256(data).hexdigest()[:8]
    return dataclasses.replace(catalog.parse(TV), file_name=f"resnet18-{prefix}.pth", sha256_prefix=prefix, url=url)


def test_torch_hub_checkpoints_follows_torch_home_and_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch.torch_hub_checkpoints() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert fetch.torch_hub_checkpoints() == tmp_path / "th" / "hub" / "checkpoints"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fetch.torch_hub_checkpoints() == tmp_path / "home" / ".cache" / "torch" / "hub" / "checkpoints"


def test_torchvision_downloaded_checked_and_renamed(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = b"a torchvision checkpoint"
    entry = tv_entry(data)
    seen = []

    def download(url, destination):
        seen.append((url, destination))
        destination.write_bytes(data)

    monkeypatch.setattr(fetch, "url_download", download)
    got = fetch.fetch(entry)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert (got.path, got.origin) == (folder / entry.file_name, "download")
    assert got.path.read_bytes() == data and entry.sha256_prefix in got.check
    [(url, temporary)] = seen
    assert url == entry.url and temporary.parent == folder and temporary.name != entry.file_name
    assert sorted(p.name for p in folder.iterdir()) == [entry.file_name]  # the temporary name is gone
    # Cached now: no download, the prefix checked again.
    monkeypatch.setattr(fetch, "url_download", lambda url, destination: pytest.fail("downloaded again"))
    got = fetch.fetch(entry)
    assert got.origin == "cache" and "torch.hub's check" in got.check
    got.path.write_bytes(b"another file")
    one_line(lambda: fetch.fetch(entry), "refused", entry.sha256_prefix, "delete it")


def test_torchvision_through_the_real_urllib_client_with_a_file_url(monkeypatch, tmp_path):
    monkeypatch.undo()  # urllib itself, on file:// URLs: no network
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = b"served from a file URL"
    served = tmp_path / "served.pth"
    served.write_bytes(data)
    got = fetch.fetch(tv_entry(data, url=served.as_uri()))
    assert got.origin == "download" and got.path.read_bytes() == data
    one_line(lambda: fetch.fetch(tv_entry(b"other", url=(tmp_path / "gone.pth").as_uri())), "failed (it cannot be")


def test_torchvision_a_download_with_the_wrong_hash_is_not_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    entry = tv_entry(b"the published file")
    monkeypatch.setattr(fetch, "url_download", lambda url, destination: destination.write_bytes(b"something else"))
    one_line(lambda: fetch.fetch(entry), "refused", entry.url, entry.sha256_prefix, "nothing was kept")
    assert list((tmp_path / "torch" / "hub" / "checkpoints").iterdir()) == []


def test_torchvision_offline_and_not_cached_says_what_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, destination):
        destination.write_bytes(b"partial")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fetch, "url_download", offline)
    message = one_line(
        lambda: fetch.fetch(catalog.parse(TV)),
        "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        "torchvision:resnet18.IMAGENET1K_V1=/path/to/resnet18-f37072fd.pth",
        "TORCH_HOME",
    )
    assert message.startswith("torchvision:resnet18.IMAGENET1K_V1 is not in the torch hub cache")
    assert list((tmp_path / "torch" / "hub" / "checkpoints").iterdir()) == []


# --- fetching: keras-hub (kagglehub) ----------------------------------------------------------------------------------
def test_keras_hub_through_kagglehub(monkeypatch, preset):
    handles = []
    monkeypatch.setattr(fetch, "kaggle_model_download", lambda handle: handles.append(handle) or str(preset))
    got = fetch.fetch(catalog.parse(KH))
    assert handles == ["keras/resnetv1/keras/resnet_18_imagenet/3"]
    assert (got.path, got.origin) == (preset, "download")

    def offline(handle):
        raise ConnectionError("Kaggle is unreachable")

    monkeypatch.setattr(fetch, "kaggle_model_download", offline)
    one_line(
        lambda: fetch.fetch(catalog.parse(KH)),
        "Kaggle is unreachable",
        "https://www.kaggle.com/models/keras/resnetv1/keras/resnet_18_imagenet/3",
        f"{KH}=/path/to/preset",
    )


def test_keras_hub_without_kagglehub_says_how_to_get_the_preset(monkeypatch):
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "kagglehub", None)
    one_line(
        lambda: fetch.fetch(catalog.parse(KH)),
        "kagglehub is not installed",
        "https://www.kaggle.com/models/keras/resnetv1/keras/resnet_18_imagenet/3",
        f"{KH}=/path/to/preset",
    )


# --- loading, and get_model(weights=...) ------------------------------------------------------------------------------
def assert_same_weights(model, reference, skip=("logits",)):
    for layer in reference.layers:
        if layer.weights and layer.name not in skip:
            for got, want in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(got, want, err_msg=layer.name)


def test_get_model_with_timm_weights_from_a_safetensors_file(files, reference, images, expected):
    entry = catalog.parse(TIMM)
    model = get_model("resnet18", num_classes=1000, weights=f"{TIMM}={files['safetensors']}")
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, rtol=1e-5, atol=1e-5)
    normalization = get_normalization(model)
    np.testing.assert_allclose(np.asarray(normalization.mean), entry.mean_255, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(normalization.std), entry.std_255, rtol=1e-6)
    assert model.input_shape == (None, None, None, 3) and model.name == "resnet18"


def test_load_imagenet_reports_what_it_did(files, expected, images):
    model, info = load_imagenet(f"{TIMM}={files['safetensors']}")
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, rtol=1e-5, atol=1e-5)
    assert info["spec"] == f"{TIMM}={files['safetensors']}" and info["entry"] == catalog.parse(TIMM)
    assert (info["file"], info["origin"], info["classifier"], info["num_classes"]) == (
        files["safetensors"],
        "path",
        "loaded",
        1000,
    )
    assert info["class_names"] == imagenet_class_names()
    assert info["loaded"]["tensors"] == 102 and info["loaded"]["ignored"] == 20  # 20 num_batches_tracked
    assert info["mean"] == catalog.parse(TIMM).mean_255 and info["check"].startswith("none")


def test_another_class_count_gets_a_new_classifier(files, reference):
    model, info = load_imagenet(f"{TIMM}={files['safetensors']}", num_classes=10, seed=5)
    assert model.output_shape == (None, 10)
    assert info["classifier"] == "new" and info["class_names"] is None and "new (random, 10 classes)" in info["note"]
    assert_same_weights(model, reference)
    same = get_model("resnet18", num_classes=10, seed=5, weights=f"{TIMM}={files['safetensors']}")
    np.testing.assert_array_equal(same.get_layer("logits").get_weights()[0], model.get_layer("logits").get_weights()[0])


def test_include_top_false_gives_the_backbone(files, reference, images):
    model = get_model("resnet18", include_top=False, pooling="avg", weights=f"{TIMM}={files['safetensors']}")
    features = keras.Model(reference.input, reference.get_layer("avg_pool").output)
    np.testing.assert_allclose(model(images), features(images), rtol=1e-5, atol=1e-5)
    _, info = load_imagenet(f"{TIMM}={files['safetensors']}", include_top=False)
    assert info["classifier"] == "absent" and info["class_names"] is None
    assert info["loaded"]["unused"] == ["fc.bias", "fc.weight"]


def test_get_model_with_torchvision_weights_from_a_torch_zip(files, expected, images):
    model = get_model("resnet18", num_classes=1000, weights=f"{TV}={files['pth']}")
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, rtol=1e-5, atol=1e-5)


def test_get_model_with_keras_hub_weights_from_a_preset_folder(preset, expected, images):
    model = get_model("resnet18", num_classes=1000, weights=f"{KH}={preset}")
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, rtol=1e-5, atol=1e-5)
    _, info = load_imagenet(f"{KH}={preset}")
    assert info["names_resolved"].startswith(f"backbone {presets.BY_NAME}; classifier {presets.BY_NAME}")
    assert info["class_names"] == imagenet_class_names()


# keras-hub 0.32.0's ResNetBackbone(resnet_18 config).layers under Keras 3.15.1, the weighted ones: the order its
# weights file numbers conv2d_k / batch_normalization_k groups in (the projection shortcuts interleaved).
KERAS_HUB_RESNET18_ORDER = (
    "conv1_conv conv1_bn stack0_block0_1_conv stack0_block0_1_bn stack0_block0_2_conv stack0_block0_2_bn "
    "stack0_block1_1_conv stack0_block1_1_bn stack0_block1_2_conv stack0_block1_2_bn stack1_block0_1_conv "
    "stack1_block0_1_bn stack1_block0_0_conv stack1_block0_2_conv stack1_block0_0_bn stack1_block0_2_bn "
    "stack1_block1_1_conv stack1_block1_1_bn stack1_block1_2_conv stack1_block1_2_bn stack2_block0_1_conv "
    "stack2_block0_1_bn stack2_block0_0_conv stack2_block0_2_conv stack2_block0_0_bn stack2_block0_2_bn "
    "stack2_block1_1_conv stack2_block1_1_bn stack2_block1_2_conv stack2_block1_2_bn stack3_block0_1_conv "
    "stack3_block0_1_bn stack3_block0_0_conv stack3_block0_2_conv stack3_block0_0_bn stack3_block0_2_bn "
    "stack3_block1_1_conv stack3_block1_1_bn stack3_block1_2_conv stack3_block1_2_bn"
).split()


def test_keras_hub_files_without_layer_names_resolve_by_the_rebuilt_order(preset, tmp_path, expected, images):
    config = KERAS_HUB_RESNET18_CONFIG["config"]
    assert [name for _, name in presets.backbone_layer_order(config)] == KERAS_HUB_RESNET18_ORDER
    assert [layer.name for layer in keras_hub_resnet18().layers if layer.weights] == KERAS_HUB_RESNET18_ORDER
    old = tmp_path / "old"
    old.mkdir()
    shutil.copyfile(preset / "config.json", old / "config.json")
    strip_names(preset / "model.weights.h5", old / "model.weights.h5")
    strip_names(preset / "task.weights.h5", old / "task.weights.h5")
    model, info = load_imagenet(f"{KH}={old}")
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, rtol=1e-5, atol=1e-5)
    assert info["names_resolved"].startswith(f"backbone {presets.BY_POSITION}; classifier as the file's only layer")
    # A name that contradicts the rebuilt order is refused.
    strip_names(preset / "model.weights.h5", old / "model.weights.h5", rename={"conv2d_3": "stack0_block1_2_conv"})
    one_line(lambda: load_imagenet(f"{KH}={old}"), "layers/conv2d_3 is named 'stack0_block1_2_conv'", "rebuilt")


def test_keras_hub_preset_refusals(preset, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(preset, other)
    config = json.loads((preset / "config.json").read_text())
    config["config"]["stackwise_num_blocks"] = [3, 4, 6, 3]
    (other / "config.json").write_text(json.dumps(config))
    one_line(lambda: load_imagenet(f"{KH}={other}"), "stackwise_num_blocks=[3, 4, 6, 3]", "another network")
    (other / "config.json").write_text(json.dumps(KERAS_HUB_RESNET18_CONFIG))
    (other / "task.weights.h5").unlink()
    one_line(lambda: load_imagenet(f"{KH}={other}"), "has no task.weights.h5", "include_top=False")
    model, info = load_imagenet(f"{KH}={other}", include_top=False)  # the backbone needs no head file
    assert info["classifier"] == "absent"


def test_the_preset_normalization_is_read_and_used_where_it_differs(preset, tmp_path):
    folder = tmp_path / "converter"
    shutil.copytree(preset, folder)
    entry = catalog.parse(KH)
    converter = {"class_name": "ResNetImageConverter", "config": {"scale": [1 / s for s in entry.std_255]}}
    converter["config"]["offset"] = [-m / s for m, s in zip(entry.mean_255, entry.std_255)]
    (folder / "image_converter.json").write_text(json.dumps(converter))
    model, info = load_imagenet(f"{KH}={folder}", include_top=False)
    assert "agrees" in info["normalization_from"]
    converter = {"class_name": "ImageConverter", "config": {"scale": 1 / 255, "offset": None}}  # [0, 1], no mean
    (folder / "image_converter.json").write_text(json.dumps(converter))
    model, info = load_imagenet(f"{KH}={folder}", include_top=False)
    assert "differs" in info["normalization_from"]
    np.testing.assert_allclose(info["mean"], (0, 0, 0), atol=1e-9)
    np.testing.assert_allclose(np.asarray(get_normalization(model).std), (255, 255, 255), rtol=1e-6)


def test_get_model_refusals(files, tmp_path):
    path = files["safetensors"]
    message = one_line(lambda: get_model("resnet34", weights="timm:resnet50d.ra2_in1k"))
    assert message == "timm:resnet50d.ra2_in1k is a resnet50d; get_model was asked for resnet34"
    message = one_line(
        lambda: get_model("resnet50d", weights="timm:resnet50d.ra2_in1k", bottleneck_version="v1", stem="standard")
    )
    assert (
        "bottleneck_version='v1' (the weights': 'v1.5')" in message
        and "stem='standard' (the weights': 'deep')" in message
    )
    one_line(lambda: get_model("resnet18", weights=f"{TIMM}={path}", normalization="pixel"), "normalization='pixel'")
    one_line(lambda: get_model("resnet18", weights=f"{TIMM}={path}", width=0.5), "width=0.5")
    one_line(lambda: get_model("resnet18", weights=f"{TIMM}={path}", bottleneck_version="v1.5"), "(the weights': none)")
    # The weights' own settings are accepted.
    model = get_model("resnet18", weights=f"{TIMM}={path}", stem="standard", shortcut="b", normalization="channel")
    assert model.output_shape == (None, 1000)
    one_line(lambda: get_model("resnet18", weights=f"{TIMM}={tmp_path / 'none'}"), "does not exist")
    one_line(lambda: get_model("resnet18", weights="tf:resnet18"), "not SOURCE:NAME[=PATH] with a known SOURCE")
    one_line(lambda: get_model("resnet18", include_top=False, num_classes=10, weights=f"{TIMM}={path}"), "include_top")
    one_line(lambda: load_imagenet(f"{TIMM}={tmp_path / 'none'}", pooling="avg"), "include_top=False only")
    one_line(lambda: load_imagenet(f"{TIMM}={tmp_path / 'none'}", stem="deep"), "stem cannot be set")


def test_a_file_of_another_network_gets_the_mappings_message(files):
    message = one_line(lambda: get_model("resnet34", weights=f"timm:resnet34.a1_in1k={files['safetensors']}"))
    assert "layer1.2.conv1.weight" in message and "the file is another network (resnet18?)" in message


def test_shipped_weights_still_load():
    model = get_model("resnet20", num_classes=10, weights="cifar10")
    assert model.output_shape == (None, 10)


def test_wnid_labels_read_as_imagenet_names_and_other_names_stay():
    from resnet_keras.ported.classes import readable_class_names

    assert readable_class_names(["n01440764", "n02102040", "n03000684"]) == ["tench", "English springer", "chain saw"]
    assert readable_class_names(["n01440764", "cat"]) == ["n01440764", "cat"]  # not all wnids: kept as they are
    assert readable_class_names(["airplane", "automobile"]) == ["airplane", "automobile"]
    assert readable_class_names([]) == []
