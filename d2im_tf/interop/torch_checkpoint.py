"""Read PyTorch checkpoint files (``.pt``, ``.pth``, ``.pt.tar``) into NumPy arrays, without PyTorch.

Two on-disk formats exist:

* **zip** (``torch.save`` since 1.6): a zip archive ``<name>/data.pkl`` plus ``<name>/data/<key>``.
  ``data.pkl`` is a pickle in which every tensor is a call
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])``
  and every storage a *persistent id* ``('storage', torch.FloatStorage, key, location, numel)`` whose
  bytes are the archive member ``<name>/data/<key>`` (byte order from ``<name>/byteorder``, little
  when absent).
* **legacy** (before 1.6): one stream of pickles — a magic number, the protocol version, a system
  description, the object (same persistent ids, with a sixth view field), the list of storage keys —
  followed by each storage as an int64 element count and its raw bytes.

Unpickling runs constructors named in the file, so a checkpoint from the internet could run code. The
:class:`_RestrictedUnpickler` resolves only a short whitelist of globals (:data:`STORAGE_DTYPES`,
the tensor and parameter rebuilders, ``collections.OrderedDict``, ``torch.Size``) to NumPy
stand-ins, and refuses every other one with :class:`CheckpointError`. Tensors come back as NumPy
arrays (strided views of their storage are materialised as contiguous copies).
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from d2im_tf.errors import UserError

# torch storage class → NumPy dtype (element type of the storage's bytes).
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # no NumPy dtype; read as raw uint16 and widened (see _bfloat16_to_float32)
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class CheckpointError(UserError):
    """A file that is not a readable PyTorch checkpoint, or one that asks for a forbidden global."""


class _StorageType:
    """Stand-in for ``torch.<Name>Storage``: only carries the element type."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    def from_bytes(self, raw: bytes, byteorder: str) -> np.ndarray:
        if self.dtype is None:  # bfloat16: the high half of a float32
            halves = np.frombuffer(raw, dtype=np.dtype("<u2" if byteorder == "little" else ">u2"))
            return (halves.astype(np.uint32) << 16).view(np.float32)
        dtype = np.dtype(self.dtype).newbyteorder("<" if byteorder == "little" else ">")
        return np.frombuffer(raw, dtype=dtype).astype(np.dtype(self.dtype).newbyteorder("="))


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    """``torch._utils._rebuild_tensor_v2`` on a flat NumPy storage → a contiguous array of ``size``.

    In a legacy file the storage bytes follow the object: the tensor is then left pending and built by
    :func:`_resolve_pending` once they are read.
    """
    if isinstance(storage, _PendingStorage):
        return _PendingTensor(storage, storage_offset, size, stride)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if any(s == 0 for s in size):
        return np.zeros(size, dtype=storage.dtype)
    needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if storage_offset < 0 or needed > storage.size or min(stride, default=0) < 0:
        raise CheckpointError(f"a tensor of size {size} reads past the end of its storage ({storage.size} elements)")
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride), writeable=False
    )
    return np.array(view)


class _PendingStorage:
    """A legacy file's storage before its bytes are read: key, element count, optional (offset, size) view."""

    def __init__(self, key: str, numel: int, view=None):
        self.key, self.numel, self.view = key, numel, view


class _PendingTensor:
    def __init__(self, storage: _PendingStorage, *args):
        self.storage, self.args = storage, args


def _resolve_pending(value, storages: dict):
    """``value`` with every :class:`_PendingTensor` (in dicts, lists, tuples) built from ``storages``."""
    if isinstance(value, _PendingTensor):
        pending = value.storage
        storage = storages[pending.key][: pending.numel]
        if pending.view is not None:
            offset, size = pending.view
            storage = storage[offset : offset + size]
        return _rebuild_tensor(storage, *value.args)
    if isinstance(value, dict):
        return type(value)((k, _resolve_pending(v, storages)) for k, v in value.items())
    if isinstance(value, list):
        return [_resolve_pending(v, storages) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve_pending(v, storages) for v in value)
    return value


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    """``torch._utils._rebuild_parameter(_with_state)``: a parameter is its data."""
    return data


# (module, name) → what the unpickler gives for it.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,  # files of PyTorch 0.4: same first four arguments
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only whitelisted globals; storages come from ``load_storage``."""

    def __init__(self, stream, load_storage, source: str):
        super().__init__(stream)
        self._load_storage = load_storage
        self._source = source

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(f"{self._source}: refuses to load the global {module}.{name} "
                                  "(only tensors, storages and plain containers are allowed)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"{self._source}: unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        view = None
        if len(pid) == 6 and pid[5] is not None:  # legacy view of a storage: (view key, offset, size)
            view = (int(pid[5][1]), int(pid[5][2]))
        return self._load_storage(storage_type, str(key), int(numel), view)


def _read_zip(path: Path, archive: zipfile.ZipFile):
    pickles = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: a zip file but not a PyTorch checkpoint (no <name>/data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
        byteorder = archive.read(f"{prefix}byteorder").decode().strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"{path}: unknown byteorder record {byteorder!r}")
    cache = {}

    def load_storage(storage_type: _StorageType, key: str, numel: int, view) -> np.ndarray:
        if key not in cache:
            try:
                raw = archive.read(f"{prefix}data/{key}")
            except KeyError:
                raise CheckpointError(f"{path}: storage {key} is missing from the archive") from None
            array = storage_type.from_bytes(raw, byteorder)
            if array.size < numel:
                raise CheckpointError(f"{path}: storage {key} holds {array.size} elements, expected {numel}")
            cache[key] = array[:numel]
        if view is not None:
            return cache[key][view[0] : view[0] + view[1]]
        return cache[key]

    return _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), load_storage, str(path)).load()


def _read_legacy(path: Path, stream):
    def no_storage(*_):
        raise CheckpointError(f"{path}: a storage inside the header")

    header = [_RestrictedUnpickler(stream, no_storage, str(path)).load() for _ in range(3)]
    if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL or not isinstance(header[2], dict):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number or protocol)")
    if not header[2].get("little_endian", True):
        raise CheckpointError(f"{path}: big-endian legacy checkpoints are not supported")
    types = {}  # storage key → storage type

    def pending(storage_type, key, numel, view):
        types[key] = storage_type
        return _PendingStorage(key, numel, view)

    obj = _RestrictedUnpickler(stream, pending, str(path)).load()
    keys = _RestrictedUnpickler(stream, no_storage, str(path)).load()
    if not isinstance(keys, list):
        raise CheckpointError(f"{path}: bad storage key list")
    storages = {}
    for key in map(str, keys):
        count = stream.read(8)
        if len(count) != 8 or key not in types:
            raise CheckpointError(f"{path}: truncated or inconsistent at storage {key}")
        (numel,) = struct.unpack("<q", count)
        storage_type = types[key]
        itemsize = 2 if storage_type.dtype is None else np.dtype(storage_type.dtype).itemsize
        raw = stream.read(numel * itemsize)
        if len(raw) != numel * itemsize:
            raise CheckpointError(f"{path}: truncated (storage {key})")
        storages[key] = storage_type.from_bytes(raw, "little")
    missing = set(types) - set(storages)
    if missing:
        raise CheckpointError(f"{path}: storage {sorted(missing)[0]} has no data")
    return _resolve_pending(obj, storages)


def _read(path: Path):
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _read_zip(path, archive)
        with open(path, "rb") as stream:
            return _read_legacy(path, stream)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except CheckpointError:
        raise
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError,
            AttributeError, IndexError, struct.error) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                              f"({error.__class__.__name__}: {error})") from None


def load_checkpoint(path):
    """The object saved in a PyTorch checkpoint file, tensors as NumPy arrays (module docstring)."""
    return _read(Path(path))
