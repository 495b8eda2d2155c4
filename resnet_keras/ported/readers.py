"""Torch-free, safe readers of the weight files other libraries publish.

- ``read_safetensors``: a ``.safetensors`` file (timm's ``model.safetensors`` on the Hugging Face Hub), through the
  ``safetensors`` package; BF16 tensors, which numpy has no type for, are widened to float32 (exactly: a bfloat16 is
  the upper half of a float32).
- ``read_torch_zip``: a ``torch.save`` file in the zip format of PyTorch 1.6 and later (torchvision's ``.pth``,
  timm's ``pytorch_model.bin``), without PyTorch. Its ``data.pkl`` is unpickled by an unpickler that knows only what
  a state dict needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and ``_rebuild_parameter``,
  the ``torch.*Storage`` dtype markers) and refuses every other global before anything runs, so a file cannot make it
  call ``os.system`` and the like. Tensors come back as C-contiguous numpy copies of their storages' records.
- ``read_keras_weights_h5``: the layers of a Keras 3 ``.weights.h5`` file (a keras-hub preset's
  ``model.weights.h5``), with h5py, no keras-hub.
- ``read_weights_file``: safetensors or torch zip, told apart by the file's first bytes, not by its extension.

Every refusal is one ``ValueError`` line naming the file and what is wrong with it.
"""

from __future__ import annotations

import collections
import json
import math
import os
import pickle
import re
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["WeightsFileError", "read_keras_weights_h5", "read_safetensors", "read_torch_zip", "read_weights_file"]

ACCEPTED = "a .safetensors file or a torch.save zip of PyTorch 1.6 or later"
ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# torch's _legacy_save starts with the pickled MAGIC_NUMBER 0x1950A86A20F9469CFC6C (protocol 2, LONG1 of 10 bytes).
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
LEGACY_TORCH = "a legacy torch file (before PyTorch 1.6): re-save it with torch.save in a current PyTorch"
# The safetensors reference implementation caps the JSON header at 100 MB.
MAX_SAFETENSORS_HEADER = 100_000_000


class WeightsFileError(ValueError):
    """A weights file refused: one line naming the file and what is wrong with it."""


def _error(path, what):
    return WeightsFileError(f"cannot read {os.fspath(path)}: {what}")


def _head(path, n):
    with open(path, "rb") as f:
        return f.read(n)


def _bf16_to_float32(raw):
    """bfloat16 bits (uint16) -> float32: they are the upper 16 bits of the float32 with the same value."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


# --------------------------------------------------------------------------------------------------------------
# safetensors

_SAFETENSORS_ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "U64": 8,
    "I32": 4,
    "U32": 4,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "C64": 8,
}


def _safetensors_header(path):
    """The header of a safetensors file, checked against the file's size; returns (header dict, data start)."""
    size = os.path.getsize(path)
    head = _head(path, 9)
    if size < 9:
        raise _error(path, f"the file has {size} bytes, too few for a safetensors file")
    if head[8:9] != b"{":
        raise _error(path, "not a safetensors file (no JSON header after the 8-byte length)")
    (n,) = struct.unpack("<Q", head[:8])
    if n > size - 8:
        raise _error(
            path, f"truncated: the safetensors header says {n} bytes but the file has {size - 8} after its length"
        )
    if n > MAX_SAFETENSORS_HEADER:
        raise _error(path, f"a safetensors header of {n} bytes, over the {MAX_SAFETENSORS_HEADER} the format allows")
    with open(path, "rb") as f:
        f.seek(8)
        text = f.read(n)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _error(path, f"the safetensors header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise _error(path, "the safetensors header is not a JSON object")
    buffer = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = isinstance(dtype, str) and all(isinstance(d, int) and d >= 0 for d in shape)
            ok = ok and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise _error(path, f"the safetensors header's entry for {name!r} is not a tensor record: {info!r}"[:300])
        if end > buffer:
            raise _error(
                path,
                f"truncated: tensor {name!r} ends at byte {end} of the data but the file holds {buffer} bytes of data",
            )
        itemsize = _SAFETENSORS_ITEMSIZE.get(dtype)
        if itemsize is not None and end - begin != math.prod(shape) * itemsize:
            raise _error(
                path,
                f"tensor {name!r} ({dtype}, shape {shape}) has {end - begin} bytes, not {math.prod(shape) * itemsize}",
            )
    return header, 8 + n


def read_safetensors(path) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file, by name, as numpy arrays (in the file's dtypes, but BF16 -> float32).

    The header is checked against the file's size first, so a truncated download is refused in one line; the
    tensors are read with ``safetensors.safe_open(path, framework="np")``. numpy has no bfloat16, and the package's
    numpy framework refuses it: those tensors are read from their bytes here and widened to float32, which is exact.
    Other types numpy lacks (float8) are refused.
    """
    from safetensors import safe_open

    header, data_start = _safetensors_header(path)
    tensors = {}
    try:
        with safe_open(os.fspath(path), framework="np") as f:
            for name in f.keys():
                info = header[name]
                if info["dtype"] == "BF16":
                    begin, end = info["data_offsets"]
                    with open(path, "rb") as raw:
                        raw.seek(data_start + begin)
                        bits = np.frombuffer(raw.read(end - begin), dtype="<u2")
                    tensors[name] = _bf16_to_float32(bits).reshape(info["shape"])
                elif info["dtype"] not in _SAFETENSORS_ITEMSIZE:
                    raise _error(path, f"tensor {name!r} is {info['dtype']}, a type numpy has no equivalent for")
                else:
                    tensors[name] = f.get_tensor(name)
    except WeightsFileError:
        raise
    except Exception as e:  # safetensors' own SafetensorError, or numpy's TypeError on a type it lacks
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _error(path, f"not a valid safetensors file ({first})") from None
    return tensors


# --------------------------------------------------------------------------------------------------------------
# torch.save zips

# torch's legacy storage classes (the markers its pickles name) -> the dtype of their records (little-endian).
# BFloat16 is read as its raw bits (uint16) and widened to float32 after the byte order is settled.
_STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
}


class _Refused(Exception):
    """A refusal raised while unpickling (worded without the file, which read_torch_zip adds)."""


class _NoBuild:
    """Objects the unpickler hands out must not take a pickle BUILD (it would set attributes on them)."""

    __slots__ = ()

    def __setstate__(self, state):
        raise _Refused(f"the pickle sets the state of {self!r}, which a state dict never does")


class _StorageType(_NoBuild):
    """A ``torch.<X>Storage`` global: only a dtype marker in a storage record."""

    __slots__ = ("name", "dtype")

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])

    def __repr__(self):
        return f"torch.{self.name}"

    def __call__(self, *args):
        raise _Refused(f"the pickle calls torch.{self.name}, which a state dict never does")


class _Function(_NoBuild):
    """One of the few torch functions a state dict's pickle calls, done here with numpy."""

    __slots__ = ("name", "function")

    def __init__(self, name, function):
        self.name = name
        self.function = function

    def __repr__(self):
        return self.name

    def __call__(self, *args):
        return self.function(*args)


class _Storage(_NoBuild):
    """A storage's record, read whole: a 1-D array of ``numel`` elements."""

    __slots__ = ("key", "array")

    def __init__(self, key, array):
        self.key = key
        self.array = array

    def __repr__(self):
        return f"storage {self.key!r}"


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2``: the view of ``storage`` at ``storage_offset`` with ``size`` and
    ``stride`` (in elements), copied into a C-contiguous array. The view is checked to lie inside the storage
    before ``as_strided`` makes it (as_strided itself would read any memory it is told to)."""
    del requires_grad, backward_hooks, metadata  # autograd state and hooks; meaningless for numpy
    if not isinstance(storage, _Storage):
        raise _Refused(f"a tensor is built on {type(storage).__name__}, not on a storage record")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
        raise _Refused(f"a tensor on {storage!r} has size {size!r} and stride {stride!r}")
    numbers = (storage_offset, *size, *stride)
    if not all(isinstance(v, int) and v >= 0 for v in numbers):
        raise _Refused(f"a tensor on {storage!r} has offset {storage_offset!r}, size {size}, stride {stride}")
    array = storage.array
    if math.prod(size) == 0:
        return np.zeros(size, dtype=array.dtype)
    if math.prod(size) > array.size:
        raise _Refused(f"a tensor of size {size} is a broadcast view of {storage!r} ({array.size} elements)")
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= array.size:
        raise _Refused(
            f"a tensor (offset {storage_offset}, size {size}, stride {stride}) reaches element {last} of "
            f"{storage!r}, which has {array.size}"
        )
    view = np.lib.stride_tricks.as_strided(
        array[storage_offset:], shape=size, strides=[s * array.itemsize for s in stride], writeable=False
    )
    return view.copy()


def _rebuild_parameter(data, requires_grad, backward_hooks):
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is its tensor here."""
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    """``torch._utils._rebuild_parameter_with_state``: the Parameter's extra Python attributes are dropped."""
    return data


_ALLOWED_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a ``torch.save`` zip's ``data.pkl`` into numpy arrays, refusing every global but a state dict's.

    ``find_class`` is the only way a pickle reaches a Python object that can be called (GLOBAL, STACK_GLOBAL, INST,
    OBJ and the EXT opcodes all go through it), so allowing nothing else means nothing else runs. The objects it
    hands out (besides ``OrderedDict``, whose BUILD sets the state dict's ``_metadata``) refuse a BUILD.
    """

    def __init__(self, file, read_record, byteorder):
        super().__init__(file)
        self._read_record = read_record
        self._byteorder = byteorder
        self._storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _Function(f"{module}.{name}", _ALLOWED_FUNCTIONS[(module, name)])
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise _Refused(f"it names {module}.{name}, which is not a tensor (only state dicts of tensors are read)")

    def persistent_load(self, pid):
        ok = isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
        if ok:
            _, storage_type, key, location, numel = pid
            ok = isinstance(storage_type, _StorageType) and isinstance(key, str) and isinstance(location, str)
            ok = ok and isinstance(numel, int) and numel >= 0
        if not ok:
            raise _Refused(
                f"a persistent id that is not a storage record ('storage', type, key, location, numel): {pid!r}"[:300]
            )
        known = self._storages.get(key)
        if known is not None:
            if known[0] != (storage_type.name, numel):
                raise _Refused(f"storage {key!r} is named as {known[0]} and as {(storage_type.name, numel)}")
            return known[1]
        dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
        holds = f"storage {key!r} ({numel} elements of {storage_type.name})"
        raw = self._read_record(f"data/{key}", numel * dtype.itemsize, holds)
        array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)
        if storage_type.name == "BFloat16Storage":
            array = _bf16_to_float32(array)
        storage = _Storage(key, array)
        self._storages[key] = ((storage_type.name, numel), storage)
        return storage


def _is_tensor_dict(value):
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in value.items())


def _state_dict(path, obj):
    """The flat ``{name: array}`` a pickle's top object holds: the object itself, or its one dict of arrays under
    ``"state_dict"`` or ``"model"`` (a training checkpoint); anything else is refused."""
    if _is_tensor_dict(obj):
        return dict(obj)
    if isinstance(obj, dict):
        nested = [k for k, v in obj.items() if _is_tensor_dict(v) and v]
        if len(nested) == 1 and nested[0] in ("state_dict", "model"):
            return dict(obj[nested[0]])
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise _error(
            path,
            f"its pickle holds a dict ({keys}) that is not a state dict of tensors, nor a checkpoint with one state "
            "dict under 'state_dict' or 'model'",
        )
    raise _error(path, f"its pickle holds a {type(obj).__name__}, not a state dict of tensors")


def _archive_prefix(path, names):
    """The folder holding ``data.pkl`` (torch names it after the file it saved to, e.g. ``resnet18-f37072fd/``)."""
    pickles = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
    if len(pickles) == 1:
        return pickles[0][: -len("data.pkl")]
    if not pickles:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        if len(names) == 1 and not names[0].endswith("/"):
            raise _error(path, f"a zip holding only {names[0]} (an old torch hub packaging): unzip it and read that")
        raise _error(path, f"a zip without a <folder>/data.pkl, so not a torch.save file (it holds {shown})")
    raise _error(path, f"a zip with several data.pkl ({', '.join(pickles[:4])}): not one torch.save file")


def read_torch_zip(path) -> dict[str, np.ndarray]:
    """The state dict a ``torch.save`` zip holds, ``{name: array}``, without PyTorch.

    The archive's folder is the one holding ``data.pkl``; ``<folder>/data/<key>`` holds each storage's bytes (little
    endian unless the ``byteorder`` record says ``big``, then they are swapped). A tensor is the view of its storage
    that its offset, size and stride give, copied C-contiguous; tensors sharing a storage share its record. bfloat16
    tensors are widened to float32; every other dtype is kept (``num_batches_tracked`` is a 0-d int64).
    A checkpoint whose one state dict sits under ``"state_dict"`` or ``"model"`` gives that state dict. Refused in one
    line: a legacy (pre-1.6) torch file, anything but a zip, a truncated zip, a short record, and a pickle naming
    any global outside a state dict's few (the refusal names it; nothing it names is called).
    """
    head = _head(path, 512)
    if not head.startswith(ZIP_MAGIC):
        if head.startswith(LEGACY_TORCH_MAGIC) or head[:1] == b"\x80" or head[257:262] == b"ustar":
            raise _error(path, LEGACY_TORCH)
        raise _error(path, "not a zip file, so not a torch.save file of PyTorch 1.6 or later")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            prefix = _archive_prefix(path, names)
            infos = {i.filename: i for i in archive.infolist()}

            def read_record(name, expected=None, holds=""):
                info = infos.get(prefix + name)
                if info is None:
                    raise _error(path, f"a damaged torch.save file: the record {prefix + name} is missing")
                if expected is not None and info.file_size != expected:
                    raise _error(
                        path,
                        f"a damaged torch.save file: the record {prefix + name} has {info.file_size} bytes but "
                        f"{holds} takes {expected}",
                    )
                return archive.read(info)

            byteorder = "little"
            if prefix + "byteorder" in infos:
                byteorder = read_record("byteorder").decode("ascii", "replace").strip()
                if byteorder not in ("little", "big"):
                    raise _error(path, f"its byteorder record says {byteorder[:20]!r}, neither 'little' nor 'big'")
            unpickler = _StateDictUnpickler(archive.open(infos[prefix + "data.pkl"]), read_record, byteorder)
            obj = unpickler.load()
    except _Refused as e:
        raise WeightsFileError(f"refusing to load {os.fspath(path)}: {e}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise _error(path, f"a truncated or damaged zip file ({e})") from None
    except WeightsFileError:
        raise
    except Exception as e:  # a damaged pickle: UnpicklingError, or whatever a malformed opcode stream raises
        raise _error(path, f"its data.pkl is not a readable state dict ({type(e).__name__}: {e})"[:400]) from None
    return _state_dict(path, obj)


# --------------------------------------------------------------------------------------------------------------
# Keras 3 .weights.h5


def _natural_key(name):
    """``conv2d_10`` after ``conv2d_2``: Keras numbers a class's layers conv2d, conv2d_1, conv2d_2, ..."""
    base, _, counter = name.rpartition("_")
    return (base, int(counter)) if base and counter.isdigit() else (name, -1)


def read_keras_weights_h5(path) -> list[tuple[str, str | None, list[np.ndarray]]]:
    """The layers of a Keras 3 ``.weights.h5`` file: ``(group, name, arrays)`` for each ``layers/<group>/vars``.

    ``group`` is Keras' saving name (snake-case class name and counter: ``conv2d``, ``conv2d_1``, ...,
    ``batch_normalization_3``, ``dense``), ``name`` the layer's own name from the ``vars`` group's ``name``
    attribute (written by recent Keras versions; None without it), ``arrays`` the variables ``vars/0``, ``vars/1``,
    ... in order (Conv2D: kernel HWIO, bias; BatchNormalization: gamma, beta, moving mean, moving variance).

    Order: Keras creates these groups without tracking their creation order, so HDF5 lists them by name; they come
    sorted by class name and then by counter as a number (``conv2d_2`` before ``conv2d_10``), so the k-th group of a
    class is the k-th layer of that class in the model's ``layers``. A file that tracks creation order keeps it.
    Layers without variables are left out (recent Keras writes an empty ``vars`` group for them, older none).
    Only the top-level ``layers`` are read (a nested model's own ``layers`` are not walked).
    """
    import h5py

    if _head(path, 8) != HDF5_MAGIC:
        raise _error(path, "not an HDF5 file, so not a Keras .weights.h5 file")
    try:
        with h5py.File(path, "r") as f:
            layers = f.get("layers")
            if not isinstance(layers, h5py.Group):
                raise _error(path, "an HDF5 file without a 'layers' group, so not a Keras 3 .weights.h5 file")
            names = list(layers.keys())
            if not layers.id.get_create_plist().get_link_creation_order():
                names.sort(key=_natural_key)
            result = []
            for group in names:
                entry = layers[group]
                variables = entry.get("vars") if isinstance(entry, h5py.Group) else None
                if not isinstance(variables, h5py.Group) or not len(variables):
                    continue
                if not all(k.isdigit() for k in variables.keys()):
                    raise _error(path, f"layers/{group}/vars holds {sorted(variables.keys())}, not variables 0, 1, ...")
                arrays = []
                for k in sorted(variables.keys(), key=int):
                    dataset = variables[k]
                    array = np.asarray(dataset[()])
                    if dataset.attrs.get("dtype") == "bfloat16":  # Keras' marker for bfloat16 variables
                        array = _bf16_to_float32(array.view(np.uint16))
                    arrays.append(array)
                label = variables.attrs.get("name")
                if isinstance(label, bytes):
                    label = label.decode("utf-8")
                result.append((group, None if label is None else str(label), arrays))
    except WeightsFileError:
        raise
    except Exception as e:  # h5py's OSError on a damaged file, KeyError on a broken link, ...
        raise _error(path, f"a damaged HDF5 file ({type(e).__name__}: {e})") from None
    return result


# --------------------------------------------------------------------------------------------------------------


def read_weights_file(path) -> dict[str, np.ndarray]:
    """The tensors of a weights file, by name: ``read_safetensors`` or ``read_torch_zip``, chosen by the file's
    first bytes (``PK\\x03\\x04`` for a zip, an 8-byte length and ``{`` for safetensors), not by its extension."""
    if os.path.isdir(path):
        raise _error(path, f"a folder, not a weights file (accepted: {ACCEPTED})")
    head = _head(path, 512)
    if head.startswith(ZIP_MAGIC):
        return read_torch_zip(path)
    if head[8:9] == b"{":
        return read_safetensors(path)
    if head.startswith(LEGACY_TORCH_MAGIC) or head[:1] == b"\x80" or head[257:262] == b"ustar":
        raise _error(path, LEGACY_TORCH)
    if head.startswith(HDF5_MAGIC):
        raise _error(path, f"an HDF5 file (a Keras weights file?), not a weights file read here (accepted: {ACCEPTED})")
    raise _error(path, f"not a weights file read here (accepted: {ACCEPTED})")
