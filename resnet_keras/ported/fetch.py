"""Where a catalog entry's weights are on this machine: the ``=PATH`` given, else the source's own cache, else a
download when the source is reachable; and which integrity check the file passed.

* ``=PATH`` (:attr:`Entry.path`): a file, or a folder: a Hugging Face snapshot folder holding ``model.safetensors``
  (timm; ``pytorch_model.bin`` is taken where it has no safetensors), a folder holding torchvision's file, a
  keras-hub preset folder (``config.json``, ``model.weights.h5`` and, for the classifier, ``task.weights.h5``).
* timm: ``huggingface_hub.hf_hub_download(repo_id, "model.safetensors")``, first from the cache only
  (``local_files_only=True``), then online. A cached file is checked against the name of its cache blob, which the
  Hub gives as the file's LFS sha256 (no network); a file downloaded now against the LFS sha256 the Hub publishes
  (``HfApi().get_paths_info``). ``hf_hub_download`` itself checks only the size.
* torchvision: torch hub's cache ``$TORCH_HOME/hub/checkpoints/<file>`` (``TORCH_HOME`` defaults to
  ``$XDG_CACHE_HOME/torch``, ``~/.cache/torch``, as torch.hub), else the URL downloaded with urllib to a temporary
  name in that folder, its sha256 checked against the prefix the file name carries (``resnet50-0676ba61.pth``: the
  sha256 starts with 0676ba61, torch.hub's ``check_hash``), then renamed; a cached file's prefix is checked too.
* keras-hub: the preset folder from ``kagglehub.model_download(handle)`` where kagglehub is installed. Kaggle
  publishes no checksum that is checked here; the layers are checked by name and shape when they load.

Offline and not cached, or without the client package: one ``ValueError`` line saying which file to fetch (its URL)
and how to pass it (``SOURCE:NAME=PATH``). The clients are the module-level functions :func:`hf_hub_download`,
:func:`hub_sha256`, :func:`url_download` and :func:`kaggle_model_download`, which tests replace; nothing else here
touches the network.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import urllib.error
import urllib.request
import uuid

from resnet_keras.pretrained import sha256

TIMM_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's loader: safetensors first, then the torch file
PRESET_FILES = ("config.json", "model.weights.h5")
HEAD_FILE = "task.weights.h5"
DOWNLOAD_TIMEOUT = 60  # seconds without data before a torchvision download gives up
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The checks where none is possible, in words.
NO_KAGGLE_CHECKSUM = "none: Kaggle publishes no checksum checked here; the layers are checked by name and shape"
NO_HUB_CHECKSUM = (
    "none: a file outside the Hugging Face cache, whose sha256 is known only online; the tensors are checked by name "
    "and shape"
)
NO_BLOB_NAME = (
    "none: a cached file that is not a blob named by its sha256 (a cache without symlinks?); the tensors are checked "
    "by name and shape"
)


@dataclasses.dataclass(frozen=True)
class Fetched:
    """Where an entry's weights are and how they got there.

    Attributes:
        path: the weights file (torchvision, timm) or preset folder (keras-hub).
        origin: ``"path"`` (``=PATH``), ``"cache"`` or ``"download"``.
        check: the integrity check the file passed, in words (or why none was possible).
        sha256: the file's sha256 where it was computed, else ``None``.
    """

    path: pathlib.Path
    origin: str
    check: str
    sha256: str | None = None


class MissingClient(ImportError):
    """The package a source needs to download is not installed."""


# --- the clients (replaced in tests) ----------------------------------------------------------------------------
def hf_hub_download(repo_id: str, filename: str, *, local_files_only: bool) -> str:
    """``huggingface_hub.hf_hub_download``: the cached file's path (downloading it unless ``local_files_only``)."""
    try:
        import huggingface_hub
    except ImportError:
        raise MissingClient("huggingface_hub") from None
    return huggingface_hub.hf_hub_download(repo_id, filename, local_files_only=local_files_only)


def hub_sha256(repo_id: str, filename: str) -> str | None:
    """The LFS sha256 the Hub publishes for a file of ``repo_id`` (``None`` where it gives none)."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise MissingClient("huggingface_hub") from None
    for info in HfApi().get_paths_info(repo_id, [filename]):
        lfs = getattr(info, "lfs", None)
        if getattr(info, "path", None) == filename and lfs is not None:
            digest = lfs["sha256"] if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
            return str(digest).lower() if digest else None
    return None


def url_download(url: str, destination: pathlib.Path) -> None:
    """Writes the body of ``url`` to ``destination`` (urllib; raises ``OSError`` and its kin when it cannot)."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(destination, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)


def kaggle_model_download(handle: str) -> str:
    """``kagglehub.model_download(handle)``: the local folder of a Kaggle model version (cached by kagglehub)."""
    try:
        import kagglehub
    except ImportError:
        raise MissingClient("kagglehub") from None
    return kagglehub.model_download(handle)


# --- helpers ------------------------------------------------------------------------------------------------------
def _is(error: BaseException, *names: str) -> bool:
    """Whether ``error`` is one of huggingface_hub's errors by class name (without importing the package)."""
    return any(cls.__name__ in names for cls in type(error).__mro__)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def torch_hub_checkpoints() -> pathlib.Path:
    """torch.hub's checkpoint folder: ``$TORCH_HOME/hub/checkpoints``, ``TORCH_HOME`` defaulting to
    ``$XDG_CACHE_HOME/torch`` and that to ``~/.cache/torch`` (torch.hub's ``_get_torch_home``)."""
    xdg = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(xdg, "torch")))
    return pathlib.Path(home) / "hub" / "checkpoints"


def hub_url(entry, filename: str = TIMM_FILES[0]) -> str:
    endpoint = os.getenv("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{entry.repo_id}/resolve/main/{filename}"


def kaggle_url(entry) -> str:
    return "https://www.kaggle.com/models/" + _kaggle_handle(entry)


def _kaggle_handle(entry) -> str:
    return entry.kaggle_handle.removeprefix("kaggle://")


def _spec(entry) -> str:
    return f"{entry.source}:{entry.name}"


def _prefix_check(entry, path: pathlib.Path, digest: str, *, strict: bool) -> str:
    """torch.hub's check: the file's sha256 starts with the hex digits its published name carries."""
    prefix = entry.sha256_prefix
    if digest.startswith(prefix):
        return f"sha256 {digest} starts with {prefix}, the prefix in torchvision's file name (torch.hub's check)"
    if strict:
        raise ValueError(
            f"refused: {path} has sha256 {digest}, but {entry.file_name} says it starts with {prefix} "
            f"(a damaged or other file); delete it and fetch {entry.url} again"
        )
    return (
        f"none passed: the sha256 {digest} does not start with {prefix}, the prefix of torchvision's published "
        "file (a re-saved copy?); its tensors were checked by name and shape only"
    )


def _blob_check(path: pathlib.Path) -> tuple[str, str] | None:
    """For a file in the Hugging Face cache (a snapshot link to ``blobs/<sha256>`` for LFS files): its sha256
    checked against the blob's name. ``None`` where the file is not such a blob."""
    real = pathlib.Path(os.path.realpath(path))
    if real.parent.name != "blobs" or not _SHA256.fullmatch(real.name):
        return None
    digest = sha256(real)
    if digest != real.name:
        raise ValueError(
            f"refused: {path} has sha256 {digest} but the Hugging Face cache filed it as {real.name} (the Hub's LFS "
            "sha256): a damaged cache file; delete it and fetch it again"
        )
    return f"sha256 {digest} equals its Hugging Face cache blob's name (the Hub's LFS sha256 at download)", digest


# --- each source ---------------------------------------------------------------------------------------------------
def _expected(entry) -> str:
    if entry.source == "torchvision":
        return f"torchvision's {entry.file_name} (a torch.save file), or a folder holding it"
    if entry.source == "timm":
        return "a .safetensors file, or a Hugging Face snapshot folder holding model.safetensors"
    return f"a keras-hub preset folder holding {', '.join(PRESET_FILES)} and {HEAD_FILE}"


def _given(entry) -> Fetched:
    path = pathlib.Path(entry.path).expanduser()
    if not path.exists():
        raise ValueError(f"{entry.spec}: {path} does not exist; expected {_expected(entry)}")
    if entry.source == "keras-hub":
        if path.is_file() and path.name in (*PRESET_FILES, HEAD_FILE):
            path = path.parent  # a file of the preset: its folder
        if not path.is_dir():
            raise ValueError(f"{entry.spec}: {path} is a file; expected {_expected(entry)}")
        missing = [name for name in PRESET_FILES if not (path / name).is_file()]
        if missing:
            raise ValueError(f"{entry.spec}: {path} has no {' or '.join(missing)}; expected {_expected(entry)}")
        return Fetched(path, "path", NO_KAGGLE_CHECKSUM)
    if path.is_dir():
        names = (entry.file_name,) if entry.source == "torchvision" else TIMM_FILES
        inside = [path / name for name in names if (path / name).is_file()]
        if not inside:
            raise ValueError(
                f"{entry.spec}: the folder {path} holds no {' or '.join(names)}; expected {_expected(entry)}"
            )
        path = inside[0]
    if entry.source == "torchvision":
        digest = sha256(path)
        return Fetched(path, "path", _prefix_check(entry, path, digest, strict=False), digest)
    blob = _blob_check(path)
    if blob is not None:
        return Fetched(path, "path", *blob)
    return Fetched(path, "path", NO_HUB_CHECKSUM)


def _timm(entry) -> Fetched:
    spec, filename = _spec(entry), TIMM_FILES[0]
    instead = f"pass {spec}=/path/to/{filename}"
    try:
        cached = hf_hub_download(entry.repo_id, filename, local_files_only=True)
    except MissingClient:
        raise ValueError(
            f"{spec}: fetching from the Hugging Face Hub needs huggingface_hub: pip install huggingface_hub "
            f"(or fetch {hub_url(entry)} and {instead})"
        ) from None
    except Exception:  # LocalEntryNotFoundError and the like: not in the cache
        cached = None
    if cached is not None:
        path = pathlib.Path(cached)
        blob = _blob_check(path)
        if blob is not None:
            return Fetched(path, "cache", *blob)
        return Fetched(path, "cache", NO_BLOB_NAME)
    try:
        path = pathlib.Path(hf_hub_download(entry.repo_id, filename, local_files_only=False))
    except Exception as e:
        if _is(e, "RepositoryNotFoundError", "RemoteEntryNotFoundError", "RevisionNotFoundError"):
            raise ValueError(f"{spec}: the Hub has no {entry.repo_id}/{filename} ({_first_line(e)})") from None
        offline_mode = os.getenv("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        offline = " (HF_HUB_OFFLINE is set)" if offline_mode or _is(e, "OfflineModeIsEnabled") else ""
        raise ValueError(
            f"{spec} is not in the Hugging Face cache and the Hub is unreachable{offline}: fetch {hub_url(entry)} and "
            f"{instead} (or set HF_HOME to a cache that has it)"
        ) from None
    digest = sha256(path)
    try:
        published = hub_sha256(entry.repo_id, filename)
    except Exception:
        published = None
    if published is not None:
        if digest != published:
            raise ValueError(
                f"refused: {path} has sha256 {digest} but the Hub publishes {published} for {entry.repo_id}/{filename}"
                "; delete it from the Hugging Face cache and fetch it again"
            )
        return Fetched(path, "download", f"sha256 {digest} equals the LFS sha256 the Hub publishes", digest)
    blob = _blob_check(path)
    if blob is not None:
        return Fetched(path, "download", *blob)
    return Fetched(path, "download", "none: the Hub published no LFS sha256 for it", digest)


def _torchvision(entry) -> Fetched:
    spec = _spec(entry)
    folder = torch_hub_checkpoints()
    path = folder / entry.file_name
    if path.is_file():
        digest = sha256(path)
        return Fetched(path, "cache", _prefix_check(entry, path, digest, strict=True), digest)
    temporary = folder / f"{entry.file_name}.{uuid.uuid4().hex}.partial"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        url_download(entry.url, temporary)
    except Exception as e:
        temporary.unlink(missing_ok=True)
        if isinstance(e, urllib.error.HTTPError):
            reason = f"it answered HTTP {e.code}"
        elif isinstance(e, urllib.error.URLError):
            reason = f"it cannot be reached: {e.reason}"
        else:
            reason = f"it cannot be downloaded: {_first_line(e)}"
        raise ValueError(
            f"{spec} is not in the torch hub cache ({path}) and {entry.url} failed ({reason}): fetch it and pass "
            f"{spec}=/path/to/{entry.file_name} (or set TORCH_HOME to a cache that has it)"
        ) from None
    try:
        digest = sha256(temporary)
        check = _prefix_check(entry, temporary, digest, strict=True)
    except ValueError:
        temporary.unlink(missing_ok=True)
        raise ValueError(
            f"refused: the download of {entry.url} does not have the sha256 prefix {entry.sha256_prefix} its name "
            f"carries (sha256 {digest}); nothing was kept"
        ) from None
    os.replace(temporary, path)
    return Fetched(path, "download", check, digest)


def _keras_hub(entry) -> Fetched:
    spec = _spec(entry)
    instead = f"download the preset from {kaggle_url(entry)} and pass {spec}=/path/to/preset"
    try:
        folder = kaggle_model_download(_kaggle_handle(entry))
    except MissingClient:
        raise ValueError(f"{spec}: kagglehub is not installed (pip install kagglehub); or {instead}") from None
    except Exception as e:
        raise ValueError(f"{spec}: kagglehub could not fetch it ({_first_line(e)}); {instead}") from None
    given = _given(dataclasses.replace(entry, path=os.fspath(folder)))
    return dataclasses.replace(given, origin="download")


def fetch(entry) -> Fetched:
    """The local weights of a catalog entry (:func:`~resnet_keras.ported.catalog.parse`'s) and the check they
    passed; a one-line ``ValueError`` where they are not here and cannot be fetched, or fail their check."""
    if entry.path is not None:
        return _given(entry)
    return {"timm": _timm, "torchvision": _torchvision, "keras-hub": _keras_hub}[entry.source](entry)


def weights_path(entry) -> pathlib.Path:
    """The local file (torchvision, timm) or preset folder (keras-hub) of a catalog entry: :func:`fetch`'s path."""
    return fetch(entry).path
