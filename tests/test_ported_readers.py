"""resnet_keras.ported.readers: the torch-free readers of .safetensors files, torch.save zips and Keras .weights.h5
files (issue 39). Every fixture is written here with numpy (and the safetensors package), without PyTorch; one test
compares with a file torch itself wrote, where a PyTorch interpreter is at hand (TORCH_PYTHON or
~/torch-venv/bin/python), and is skipped elsewhere."""

import collections
import io
import json
import os
import pickle
import pickletools
import struct
import subprocess
import tarfile
import textwrap
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from resnet_keras.ported import readers
from resnet_keras.ported.readers import (
    WeightsFileError,
    read_keras_weights_h5,
    read_safetensors,
    read_torch_zip,
    read_weights_file,
)

# --------------------------------------------------------------------------------------------------------------
# A torch.save writer without torch.
#
# torch.save's data.pkl is a protocol-2 pickle naming torch's globals (``torch._utils _rebuild_tensor_v2``,
# ``torch FloatStorage``) and pointing at each storage's bytes with a persistent id. These stand-ins produce the same
# opcodes without importing torch: ``_Global`` names a global of a module that is not imported, and the pure-Python
# ``pickle._Pickler`` subclass below writes it as a GLOBAL opcode (the C pickler would import the module to check the
# name); ``_Tensor.__reduce__`` gives ``(_rebuild_tensor_v2, (storage, offset, size, stride, False, OrderedDict()))``
# like torch's Tensor, and ``persistent_id`` turns a ``_Storage`` into torch's
# ``('storage', <GLOBAL torch FloatStorage>, key, 'cpu', numel)`` record, whose bytes go to ``<prefix>/data/<key>``.
# The test with a real torch file checks that the reader gives what torch wrote.


class _Global:
    """Stands for the global ``module.name`` (pickled as GLOBAL, never imported or called here)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable
        raise AssertionError("a stand-in is never called")


class _Storage:
    """A torch storage: its marker class (FloatStorage, LongStorage, ...), its key and its elements."""

    def __init__(self, key, marker, array):
        self.key, self.marker, self.array = key, marker, np.ascontiguousarray(array).reshape(-1)


class _Tensor:
    """A tensor: the view of a storage at ``offset`` with ``size`` and ``stride`` in elements, as torch pickles it."""

    def __init__(self, storage, offset, size, stride, rebuild="_rebuild_tensor_v2"):
        self.storage, self.offset, self.size, self.stride, self.rebuild = storage, offset, size, stride, rebuild

    def __reduce__(self):
        args = (self.storage, self.offset, tuple(self.size), tuple(self.stride), False, collections.OrderedDict())
        return _Global("torch._utils", self.rebuild), args


class _Parameter:
    """An nn.Parameter: ``torch._utils._rebuild_parameter(tensor, requires_grad, backward_hooks)``."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        return _Global("torch._utils", "_rebuild_parameter"), (self.tensor, True, collections.OrderedDict())


class _Call:
    """Any call ``module.name(*args)`` in the pickle: a payload the reader must refuse without running it."""

    def __init__(self, module, name, *args):
        self.function, self.args = _Global(module, name), args

    def __reduce__(self):
        return self.function, self.args


class _PersistentId:
    """An object pickled as the persistent id ``pid`` (which a reader must accept only if it is a storage record)."""

    def __init__(self, pid):
        self.pid = pid


class _TorchPickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[_Global] = _save_global

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _Global("torch", obj.marker), obj.key, "cpu", obj.array.size)
        if isinstance(obj, _PersistentId):
            return obj.pid
        return None


def _storages(obj, found):
    if isinstance(obj, _Storage):
        found[obj.key] = obj
    elif isinstance(obj, _Tensor):
        _storages(obj.storage, found)
    elif isinstance(obj, (_Parameter,)):
        _storages(obj.tensor, found)
    elif isinstance(obj, dict):
        for v in obj.values():
            _storages(v, found)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _storages(v, found)
    return found


def write_torch_zip(path, obj, prefix="archive", byteorder="little", records=None):
    """Writes ``obj`` as torch.save does (PyTorch >= 1.6): ``<prefix>/data.pkl``, ``.format_version``,
    ``.storage_alignment``, ``byteorder``, ``data/<key>`` for each storage, ``version``. ``records`` replaces or adds
    records (bytes) or removes them (None)."""
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(obj)
    order = "<" if byteorder == "little" else ">"
    files = {"data.pkl": buffer.getvalue(), ".format_version": b"1", ".storage_alignment": b"64"}
    files["byteorder"] = byteorder.encode()
    for key, storage in _storages(obj, {}).items():
        files[f"data/{key}"] = storage.array.astype(storage.array.dtype.newbyteorder(order)).tobytes()
    files["version"] = b"3\n"
    for name, data in (records or {}).items():
        files.pop(name, None)
        if data is not None:
            files[name] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(f"{prefix}/{name}", data)
    return path


def _bf16(values):
    """float32 values rounded down to bfloat16 (their upper 16 bits), and those bits."""
    bits = (np.asarray(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32), bits


def _state_dict():
    """A state dict with the cases torch files hold, as (stand-ins to pickle, the arrays the reader must give).

    conv1.weight: contiguous float32. fc.weight: a transposed view (stride (1, 4), not C order). bn1.weight and
    bn1.bias: one storage, offsets 0 and 4. bn1.num_batches_tracked: a 0-d int64. half: float16 in a storage larger
    than the tensor, at an offset. bf: bfloat16, read as float32. param: an nn.Parameter. And ``_metadata``, set on
    the OrderedDict by a BUILD opcode as torch does."""
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc_storage = rng.standard_normal((5, 4)).astype(np.float32)  # the storage of a [4, 5] tensor's transpose
    bn = rng.standard_normal(8).astype(np.float32)
    half = rng.standard_normal(10).astype(np.float16)
    bf, bf_bits = _bf16(rng.standard_normal(6))
    param = rng.standard_normal(3).astype(np.float64)
    bn_storage = _Storage("2", "FloatStorage", bn)
    stand_ins = collections.OrderedDict(
        [
            ("conv1.weight", _Tensor(_Storage("0", "FloatStorage", conv), 0, (4, 3, 3, 3), (27, 9, 3, 1))),
            ("fc.weight", _Tensor(_Storage("1", "FloatStorage", fc_storage), 0, (4, 5), (1, 4))),
            ("bn1.weight", _Tensor(bn_storage, 0, (4,), (1,))),
            ("bn1.bias", _Tensor(bn_storage, 4, (4,), (1,))),
            ("bn1.num_batches_tracked", _Tensor(_Storage("3", "LongStorage", np.array([7], np.int64)), 0, (), ())),
            ("half", _Tensor(_Storage("4", "HalfStorage", half), 2, (2, 3), (3, 1))),
            ("bf", _Tensor(_Storage("5", "BFloat16Storage", bf_bits), 0, (2, 3), (3, 1))),
            ("param", _Parameter(_Tensor(_Storage("6", "DoubleStorage", param), 0, (3,), (1,)))),
        ]
    )
    stand_ins._metadata = collections.OrderedDict([("", {"version": 1}), ("bn1", {"version": 2})])
    expected = {
        "conv1.weight": conv,
        "fc.weight": fc_storage.T,
        "bn1.weight": bn[:4],
        "bn1.bias": bn[4:],
        "bn1.num_batches_tracked": np.array(7, np.int64),
        "half": half[2:8].reshape(2, 3),
        "bf": bf.reshape(2, 3),
        "param": param,
    }
    return stand_ins, expected


def _assert_same(got, expected):
    assert list(got) == list(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
        assert got[name].shape == want.shape, name
        assert got[name].flags.c_contiguous and got[name].flags.writeable, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def one_line(call, *words, error=ValueError):
    """``call()`` raises ``error`` with a one-line message holding every word; returns the message."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def _one_line_refusal(call, *words):
    return one_line(call, *words, error=WeightsFileError)


# --------------------------------------------------------------------------------------------------------------
# torch.save zips


def test_the_writer_emits_torch_s_opcodes():
    """The stand-ins pickle to the opcodes of a torch.save data.pkl (as torch 2.14 wrote one): GLOBALs of
    collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.<X>Storage, BINPERSID for each storage, the
    items by SETITEMS, then a BUILD (the ``_metadata``) and STOP."""
    stand_ins, _ = _state_dict()
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(stand_ins)
    ops = list(pickletools.genops(buffer.getvalue()))
    globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert {"collections OrderedDict", "torch._utils _rebuild_tensor_v2", "torch FloatStorage"} <= globals_
    assert sum(op.name == "BINPERSID" for op, _, _ in ops) == 8  # one per tensor, also for the two sharing storage 2
    assert [op.name for op, _, _ in ops[-2:]] == ["BUILD", "STOP"]


@pytest.mark.parametrize("prefix", ["resnet18-f37072fd", "archive"])
def test_reads_a_state_dict_from_a_torch_zip(tmp_path, prefix):
    stand_ins, expected = _state_dict()
    path = write_torch_zip(tmp_path / "w.pth", stand_ins, prefix=prefix)
    got = read_torch_zip(path)
    _assert_same(got, expected)
    assert type(got) is dict
    got["bn1.weight"][0] = 99  # copies: tensors sharing a storage do not share memory
    assert got["bn1.bias"][0] == expected["bn1.bias"][0]


def test_reads_big_endian_records(tmp_path):
    stand_ins, expected = _state_dict()
    got = read_torch_zip(write_torch_zip(tmp_path / "big.pth", stand_ins, byteorder="big"))
    _assert_same(got, expected)
    assert all(a.dtype.isnative for a in got.values())


def test_unwraps_a_checkpoint_with_one_state_dict(tmp_path):
    stand_ins, expected = _state_dict()
    for key in ("state_dict", "model"):
        checkpoint = {"epoch": 90, key: stand_ins, "optimizer": {"param_groups": [{"lr": 0.1}]}}
        _assert_same(read_torch_zip(write_torch_zip(tmp_path / f"{key}.pth", checkpoint)), expected)
    two = {"state_dict": stand_ins, "state_dict_ema": _state_dict()[0]}
    _one_line_refusal(lambda: read_torch_zip(write_torch_zip(tmp_path / "ema.pth", two)), "'state_dict_ema'")
    _one_line_refusal(lambda: read_torch_zip(write_torch_zip(tmp_path / "list.pth", [1, 2])), "a list")


@pytest.mark.parametrize(
    "module, name, code",
    [
        ("os", "system", "touch {marker}"),
        ("posix", "system", "touch {marker}"),
        ("builtins", "eval", "open({marker!r}, 'w').close()"),
        ("builtins", "exec", "open({marker!r}, 'w').close()"),
    ],
)
def test_refuses_a_pickle_naming_other_globals_and_runs_nothing(tmp_path, module, name, code):
    """The payload is live (the standard unpickler runs it and creates its marker file); in a torch zip, read_torch_zip
    refuses it, naming the global, and its marker file is never created."""
    control = tmp_path / "control"
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(_Call(module, name, code.format(marker=str(control))))
    pickle.loads(buffer.getvalue())
    assert control.exists()

    marker = tmp_path / "ran"
    stand_ins = collections.OrderedDict([("conv1.bias", _Call(module, name, code.format(marker=str(marker))))])
    stand_ins.update(_state_dict()[0])
    path = write_torch_zip(tmp_path / "evil.pth", stand_ins)
    message = _one_line_refusal(lambda: read_torch_zip(path), f"refusing to load {path}: it names {module}.{name},")
    assert "which is not a tensor" in message
    assert not marker.exists()


def test_refuses_calls_of_storage_markers_and_other_torch_functions(tmp_path):
    for module, name in (("torch", "FloatStorage"), ("torch._utils", "_rebuild_qtensor"), ("torch", "load")):
        stand_ins, _ = _state_dict()
        stand_ins["x"] = _Call(module, name, 1)
        path = write_torch_zip(tmp_path / f"{name}.pth", stand_ins)
        _one_line_refusal(lambda path=path: read_torch_zip(path), "refusing to load", str(path))


@pytest.mark.parametrize(
    "pid",
    [
        ("module", "os", "system"),
        ("storage", "FloatStorage", "0", "cpu", 4),  # the type is a string, not the torch.FloatStorage global
        ("storage", _Global("torch", "FloatStorage"), "0", "cpu"),
        ("storage", _Global("torch", "FloatStorage"), "0", "cpu", -1),
        "0",
    ],
)
def test_refuses_a_persistent_id_that_is_not_a_storage_record(tmp_path, pid):
    stand_ins, _ = _state_dict()
    stand_ins["x"] = _PersistentId(pid)
    path = write_torch_zip(tmp_path / "pid.pth", stand_ins)
    _one_line_refusal(lambda: read_torch_zip(path), "refusing to load", "persistent id")


def test_refuses_a_record_shorter_than_its_storage(tmp_path):
    stand_ins, _ = _state_dict()
    path = write_torch_zip(tmp_path / "short.pth", stand_ins, records={"data/0": b"\0" * 100})
    _one_line_refusal(lambda: read_torch_zip(path), str(path), "archive/data/0 has 100 bytes", "takes 432")
    path = write_torch_zip(tmp_path / "missing.pth", stand_ins, records={"data/0": None})
    _one_line_refusal(lambda: read_torch_zip(path), "archive/data/0 is missing")


def test_refuses_a_view_outside_its_storage(tmp_path):
    """as_strided would read whatever memory lies past the storage: the view is checked first."""
    storage = _Storage("0", "FloatStorage", np.zeros(6, np.float32))
    for offset, size, stride in ((4, (3,), (1,)), (0, (2, 3), (4, 1)), (0, (100,), (0,)), (-1, (2,), (1,))):
        path = write_torch_zip(tmp_path / "view.pth", {"w": _Tensor(storage, offset, size, stride)})
        _one_line_refusal(lambda path=path: read_torch_zip(path), "refusing to load")
    whole = {"a": _Tensor(storage, 0, (6,), (1,)), "b": _Tensor(storage, 3, (3,), (1,))}
    assert set(read_torch_zip(write_torch_zip(tmp_path / "inside.pth", whole))) == {"a", "b"}


def test_refuses_a_storage_named_with_two_types(tmp_path):
    a = _Storage("0", "FloatStorage", np.zeros(4, np.float32))
    b = _Storage("0", "IntStorage", np.zeros(4, np.int32))
    path = write_torch_zip(tmp_path / "two.pth", {"a": _Tensor(a, 0, (4,), (1,)), "b": _Tensor(b, 0, (4,), (1,))})
    _one_line_refusal(lambda: read_torch_zip(path), "storage '0'")


def test_refuses_legacy_torch_files(tmp_path):
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19." + b"\x80\x02M\xe9\x03." + bytes(100))
    old_tar = tmp_path / "old.pth"
    with tarfile.open(old_tar, "w") as tar:
        for name in ("storages", "tensors", "pickle"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"\x80\x02N."))
    for path in (legacy, old_tar):
        for read in (read_torch_zip, read_weights_file):
            _one_line_refusal(lambda read=read, path=path: read(path), str(path), "legacy torch file", "re-save")


def test_refuses_zips_that_are_not_torch_save_files(tmp_path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("photos/a.txt", "a")
        z.writestr("photos/b.txt", "b")
    _one_line_refusal(lambda: read_torch_zip(plain), str(plain), "data.pkl", "photos/a.txt")
    single = tmp_path / "hub.zip"
    with zipfile.ZipFile(single, "w") as z:
        z.writestr("resnet18.pth", "x")
    _one_line_refusal(lambda: read_torch_zip(single), "only resnet18.pth", "unzip")
    text = tmp_path / "notes.pth"
    text.write_text("hello, not weights\n")
    _one_line_refusal(lambda: read_torch_zip(text), "not a zip file")


def test_refuses_a_truncated_zip(tmp_path):
    stand_ins, _ = _state_dict()
    path = write_torch_zip(tmp_path / "w.pth", stand_ins)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        truncated = tmp_path / f"cut{cut}.pth"
        truncated.write_bytes(data[:cut])
        _one_line_refusal(lambda truncated=truncated: read_torch_zip(truncated), str(truncated), "truncated")


def test_refuses_a_damaged_pickle(tmp_path):
    stand_ins, _ = _state_dict()
    path = write_torch_zip(tmp_path / "w.pth", stand_ins)
    with zipfile.ZipFile(path) as z:
        pkl = z.read("archive/data.pkl")
    for i, data in enumerate((pkl[: len(pkl) // 2], b"\x80\x09" + pkl[2:], b"\xff" + pkl)):
        bad = write_torch_zip(tmp_path / f"bad{i}.pth", stand_ins, records={"data.pkl": data})
        _one_line_refusal(lambda bad=bad: read_torch_zip(bad), str(bad))


def test_refuses_an_unknown_byteorder(tmp_path):
    stand_ins, _ = _state_dict()
    path = write_torch_zip(tmp_path / "w.pth", stand_ins, records={"byteorder": b"middle"})
    _one_line_refusal(lambda: read_torch_zip(path), "byteorder")


TORCH_PYTHON = os.environ.get("TORCH_PYTHON") or os.path.expanduser("~/torch-venv/bin/python")


@pytest.mark.skipif(
    not os.path.exists(TORCH_PYTHON),
    reason=f"no PyTorch interpreter at {TORCH_PYTHON} (set TORCH_PYTHON): the fixtures above are torch-free",
)
def test_reads_what_torch_save_wrote(tmp_path):
    """A real state dict (Conv2d + BatchNorm2d + Linear, random BN statistics), saved by torch.save in a PyTorch
    interpreter with its tensors as .npz: read_torch_zip gives the same arrays, dtypes and shapes."""
    script = textwrap.dedent(
        """
        import sys, numpy as np, torch
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5))
        with torch.no_grad():
            m[1].running_mean.uniform_(-1, 1); m[1].running_var.uniform_(0.5, 2); m[1].num_batches_tracked += 3
        sd = m.state_dict()
        sd["extra.transposed"] = torch.arange(12.0).reshape(3, 4).t()
        sd["extra.bf16"] = torch.randn(5).to(torch.bfloat16)
        torch.save(sd, sys.argv[1])
        np.savez(sys.argv[2], **{k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in sd.items()})
        """
    )
    pth, npz = tmp_path / "small-1234abcd.pth", tmp_path / "small.npz"
    subprocess.run([TORCH_PYTHON, "-c", script, str(pth), str(npz)], check=True, timeout=600, capture_output=True)
    expected = dict(np.load(npz))
    _assert_same(read_torch_zip(pth), {k: expected[k] for k in expected})
    assert read_torch_zip(pth)["1.num_batches_tracked"].dtype == np.int64
    with zipfile.ZipFile(pth) as z:
        assert z.namelist()[0].startswith("small-1234abcd/")


# --------------------------------------------------------------------------------------------------------------
# safetensors


def _write_safetensors(path, entries):
    """A safetensors file written by hand: ``entries`` maps name -> (dtype string, shape, bytes)."""
    header, data = {}, b""
    for name, (dtype, shape, raw) in entries.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_reads_safetensors(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "conv1.weight": rng.standard_normal((4, 3, 7, 7)).astype(np.float32),
        "bn1.num_batches_tracked": np.array(5, np.int64),
        "half": rng.standard_normal(3).astype(np.float16),
        "empty": np.zeros((0, 3), np.float32),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    _assert_same(read_safetensors(path), dict(sorted(tensors.items())))


def test_widens_bf16_safetensors_to_float32(tmp_path):
    """numpy has no bfloat16 and safetensors' numpy framework refuses it: the reader reads the bits itself."""
    values, bits = _bf16(np.random.default_rng(2).standard_normal((2, 3)) * 100)
    other = np.arange(4, dtype=np.float32)
    path = _write_safetensors(
        tmp_path / "bf.safetensors",
        {"a": ("F32", (4,), other.tobytes()), "b": ("BF16", (2, 3), bits.astype("<u2").tobytes())},
    )
    got = read_safetensors(path)
    assert got["b"].dtype == np.float32 and got["b"].shape == (2, 3)
    np.testing.assert_array_equal(got["b"], values)
    np.testing.assert_array_equal(got["a"], other)
    assert (np.asarray(values, np.float32).view(np.uint32) & 0xFFFF == 0).all()


def test_refuses_damaged_safetensors(tmp_path):
    good = tmp_path / "model.safetensors"
    save_file({"w": np.ones((10, 10), np.float32)}, str(good))
    data = good.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])

    cut = tmp_path / "cut-data.safetensors"
    cut.write_bytes(data[:-100])
    _one_line_refusal(lambda: read_safetensors(cut), str(cut), "truncated", "tensor 'w' ends at byte 400", "300")
    cut_header = tmp_path / "cut-header.safetensors"
    cut_header.write_bytes(data[:40])
    _one_line_refusal(lambda: read_safetensors(cut_header), "truncated", f"header says {n} bytes but the file has 32")
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x02")
    _one_line_refusal(lambda: read_safetensors(tiny), "2 bytes")
    text = tmp_path / "text.safetensors"
    text.write_text("this is not a safetensors file at all")
    _one_line_refusal(lambda: read_safetensors(text), str(text), "not a safetensors file")
    bad_json = tmp_path / "json.safetensors"
    bad_json.write_bytes(struct.pack("<Q", 8) + b"{nope!!}")
    _one_line_refusal(lambda: read_safetensors(bad_json), "not JSON")
    wrong = _write_safetensors(tmp_path / "size.safetensors", {"w": ("F32", (3,), bytes(8))})
    _one_line_refusal(lambda: read_safetensors(wrong), "tensor 'w'", "8 bytes")
    f8 = _write_safetensors(tmp_path / "f8.safetensors", {"w": ("F8_E4M3", (3,), bytes(3))})
    _one_line_refusal(lambda: read_safetensors(f8), "F8_E4M3")


# --------------------------------------------------------------------------------------------------------------
# read_weights_file


def test_read_weights_file_goes_by_content_not_extension(tmp_path):
    stand_ins, expected = _state_dict()
    zipped = write_torch_zip(tmp_path / "weights.safetensors", stand_ins)
    _assert_same(read_weights_file(zipped), expected)
    safe = tmp_path / "weights.pth"
    save_file({"w": np.ones(3, np.float32)}, str(safe))
    assert list(read_weights_file(safe)) == ["w"]
    for name, data in (
        ("notes.pth", b"hello, these are not weights"),
        ("k.weights.h5", readers.HDF5_MAGIC + bytes(50)),
    ):
        other = tmp_path / name
        other.write_bytes(data)
        _one_line_refusal(lambda other=other: read_weights_file(other), str(other), "safetensors", "torch.save")
    _one_line_refusal(lambda: read_weights_file(tmp_path), "a folder")


# --------------------------------------------------------------------------------------------------------------
# Keras .weights.h5


def test_reads_keras_weights_h5_in_layer_order(tmp_path):
    import keras

    layers = [keras.Input((6, 6, 3)), keras.layers.ZeroPadding2D(1, name="pad")]
    for i in range(12):  # conv2d .. conv2d_11: the counters sort as numbers, conv2d_2 before conv2d_10
        layers += [keras.layers.Conv2D(2, 1, name=f"c{i}"), keras.layers.BatchNormalization(name=f"bn{i}")]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="predictions")]
    model = keras.Sequential(layers)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    got = read_keras_weights_h5(path)
    groups = [g for g, _, _ in got]
    assert groups == (
        ["batch_normalization"] + [f"batch_normalization_{i}" for i in range(1, 12)]
        + ["conv2d"] + [f"conv2d_{i}" for i in range(1, 12)] + ["dense"]
    )  # fmt: skip
    by_name = {layer.name: layer for layer in model.layers}
    for group, name, arrays in got:
        layer = by_name[name]
        assert group.rstrip("_0123456789") == {"c": "conv2d", "b": "batch_normalization", "p": "dense"}[name[0]]
        want = layer.get_weights()
        assert len(arrays) == len(want)
        for a, w in zip(arrays, want):
            np.testing.assert_array_equal(a, w)
    assert [n for g, n, _ in got if g.startswith("conv2d")] == [f"c{i}" for i in range(12)]


def test_keras_weights_h5_without_names_and_refusals(tmp_path):
    import h5py

    path = tmp_path / "old.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/conv2d/vars/0", data=np.ones((1, 1, 3, 2), np.float32))
        f.create_dataset("layers/dense/vars/1", data=np.zeros(2, np.float32))
        f.create_dataset("layers/dense/vars/0", data=np.ones((2, 2), np.float32))
        f.create_group("layers/flatten")
    got = read_keras_weights_h5(path)
    assert [(g, n, [a.shape for a in arrays]) for g, n, arrays in got] == [
        ("conv2d", None, [(1, 1, 3, 2)]),
        ("dense", None, [(2, 2), (2,)]),
    ]
    no_layers = tmp_path / "other.h5"
    with h5py.File(no_layers, "w") as f:
        f.create_dataset("x", data=np.ones(3))
    _one_line_refusal(lambda: read_keras_weights_h5(no_layers), str(no_layers), "'layers' group")
    text = tmp_path / "text.weights.h5"
    text.write_text("not hdf5")
    _one_line_refusal(lambda: read_keras_weights_h5(text), "not an HDF5 file")
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(path.read_bytes()[:1000])
    _one_line_refusal(lambda: read_keras_weights_h5(cut), str(cut))


def test_keras_weights_h5_bfloat16_variables_come_as_float32(tmp_path):
    """Keras stores a bfloat16 variable as 2-byte opaque data with a ``dtype="bfloat16"`` attribute."""
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, dtype="bfloat16", name="d")])
    path = tmp_path / "bf.weights.h5"
    model.save_weights(path)
    [(group, name, (kernel, bias))] = read_keras_weights_h5(path)
    assert (group, name, kernel.dtype, bias.dtype) == ("dense", "d", np.float32, np.float32)
    np.testing.assert_array_equal(kernel, np.asarray(model.layers[0].kernel).astype(np.float32))
