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

A small file must not make the reader allocate much more than it holds. ``max_bytes`` bounds both what
is read (archive members, legacy storages: declared sizes are checked before reading and the reads
themselves stop at the bound, since a declared size can lie) and what is built (every tensor's bytes,
checked with its extent against its storage before it is materialised, so a stride-0 view of one
element cannot become terabytes). The object pickle is bounded in bytes, and the unpickled structure
in nesting depth and container count (a container that contains itself is refused).
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import reprlib
import struct
import zipfile
from pathlib import Path

import numpy as np

from d2im_tf.errors import UserError, size_text

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
# Bounds when the caller names none (a network's import passes ones derived from its size).
DEFAULT_MAX_BYTES = 2 << 30  # bytes read, and bytes of tensors built
DEFAULT_MAX_PICKLE_BYTES = 16 << 20  # the object pickle (a state dict's is tens of kB)
# A checkpoint of a network may hold, per value: the weight and an optimizer's two moments (Adam), in
# float64 at worst, with a third to spare: 4 × 8 bytes; plus room for small extras (epoch, counters).
CHECKPOINT_BYTES_PER_VALUE = 32
CHECKPOINT_EXTRA_BYTES = 16 << 20
# Its object pickle: a few hundred bytes per tensor (the weights' and the optimizer's), with margin.
PICKLE_BYTES_PER_VARIABLE = 4096
MAX_DEPTH = 64  # containers inside containers
MAX_CONTAINERS = 1_000_000  # distinct dicts, lists and tuples


def checkpoint_limits(values: int, variables: int) -> tuple[int, int]:
    """``(max_bytes, max_pickle_bytes)`` for :func:`load_checkpoint` reading a checkpoint of a network with
    ``values`` parameters in ``variables`` tensors."""
    return (
        CHECKPOINT_BYTES_PER_VALUE * values + CHECKPOINT_EXTRA_BYTES,
        PICKLE_BYTES_PER_VARIABLE * variables + (1 << 20),
    )


class CheckpointError(UserError):
    """A file that is not a readable PyTorch checkpoint, or one that asks for a forbidden global."""


class _Budget:
    """What a checkpoint may make the reader allocate: ``limit`` bytes read, ``limit`` bytes built."""

    def __init__(self, path, limit: int):
        self.path, self.limit = path, int(limit)
        self.used = {"read": 0, "built": 0}

    def take(self, nbytes: int, kind: str, what: str) -> None:
        """Count ``nbytes`` more of ``kind`` ("read" or "built"); refuse past the limit, naming ``what``."""
        if nbytes < 0 or self.used[kind] + nbytes > self.limit:
            raise CheckpointError(
                f"{self.path}: {what} would need {size_text(nbytes)}, beyond the "
                f"{size_text(self.limit)} this checkpoint may take (crafted or not a checkpoint of "
                "this network?)"
            )
        self.used[kind] += nbytes


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


def _rebuild_tensor(
    storage,
    storage_offset,
    size,
    stride,
    requires_grad=False,
    backward_hooks=None,
    metadata=None,
    *,
    budget: _Budget | None = None,
):
    """``torch._utils._rebuild_tensor_v2`` on a flat NumPy storage → a contiguous array of ``size``.

    The extent (offset, size, strides) is checked against the storage and the result's bytes against
    ``budget`` before anything is built. In a legacy file the storage bytes follow the object: the
    tensor is then left pending and built by :func:`_resolve_pending` once they are read.
    """
    if isinstance(storage, _PendingStorage):
        return _PendingTensor(storage, storage_offset, size, stride)
    storage_offset = int(storage_offset)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min(size, default=0) < 0 or min(stride, default=0) < 0 or storage_offset < 0:
        raise CheckpointError(f"a tensor has an invalid layout (size {size}, stride {stride}, offset {storage_offset})")
    count = int(np.prod(size, dtype=object))
    if budget is not None:
        budget.take(count * storage.itemsize, "built", f"a tensor of size {list(size)}")
    if count == 0:
        return np.zeros(size, dtype=storage.dtype)
    needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if needed > storage.size:
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


def _resolve_pending(value, storages: dict, budget: _Budget, done: dict | None = None):
    """``value`` with every :class:`_PendingTensor` (in dicts, lists, tuples) built from ``storages``.

    A container shared in the pickle stays shared (``done``: id → result), so nested sharing is not
    multiplied out; :func:`_check_structure` has ruled out cycles and deep nesting.
    """
    done = {} if done is None else done
    if id(value) in done:
        return done[id(value)]
    if isinstance(value, _PendingTensor):
        pending = value.storage
        storage = storages[pending.key][: pending.numel]
        if pending.view is not None:
            offset, size = pending.view
            storage = storage[offset : offset + size]
        result = _rebuild_tensor(storage, *value.args, budget=budget)
    elif isinstance(value, dict):
        result = type(value)((k, _resolve_pending(v, storages, budget, done)) for k, v in value.items())
    elif isinstance(value, list):
        result = [_resolve_pending(v, storages, budget, done) for v in value]
    elif isinstance(value, tuple):
        result = tuple(_resolve_pending(v, storages, budget, done) for v in value)
    else:
        return value
    done[id(value)] = result
    return result


def _check_structure(obj, path) -> None:
    """Refuse an unpickled object nested deeper than :data:`MAX_DEPTH`, with more than
    :data:`MAX_CONTAINERS` containers, or containing itself (walked without recursion)."""
    seen, on_path = set(), set()
    stack = [(obj, 0, False)]
    while stack:
        value, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(value))
            continue
        if not isinstance(value, (dict, list, tuple)):
            continue
        if id(value) in on_path:
            raise CheckpointError(f"{path}: a {type(value).__name__} contains itself")
        if id(value) in seen:
            continue
        if depth >= MAX_DEPTH:
            raise CheckpointError(f"{path}: containers nested more than {MAX_DEPTH} levels deep")
        seen.add(id(value))
        if len(seen) > MAX_CONTAINERS:
            raise CheckpointError(f"{path}: more than {MAX_CONTAINERS:,} containers")
        on_path.add(id(value))
        stack.append((value, depth, True))
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1, False) for child in children)


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

    def __init__(self, stream, load_storage, source: str, budget: _Budget | None = None):
        super().__init__(stream)
        self._load_storage = load_storage
        self._source = source
        self._budget = budget

    def find_class(self, module, name):
        try:
            found = _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self._source}: refuses to load the global {module}.{name} "
                "(only tensors, storages and plain containers are allowed)"
            ) from None
        if found is _rebuild_tensor:
            return functools.partial(_rebuild_tensor, budget=self._budget)
        return found

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and isinstance(pid[1], _StorageType)
        ):
            raise CheckpointError(f"{self._source}: unexpected persistent id {reprlib.repr(pid)}")
        _, storage_type, key, _location, numel = pid[:5]
        view = None
        if len(pid) == 6 and pid[5] is not None:  # legacy view of a storage: (view key, offset, size)
            view = (int(pid[5][1]), int(pid[5][2]))
        if int(numel) < 0 or (view is not None and min(view) < 0):
            raise CheckpointError(f"{self._source}: storage {reprlib.repr(key)} has a negative size or offset")
        return self._load_storage(storage_type, str(key), int(numel), view)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path) -> bytes:
    """An archive member's bytes, never more than ``limit`` of them, however the member lies about its size."""
    with archive.open(info) as stream:
        raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise CheckpointError(f"{path}: {info.filename} unpacks to more than {size_text(limit)}")
    return raw


def _read_zip(path: Path, archive: zipfile.ZipFile, budget: _Budget, max_pickle_bytes: int):
    members = {info.filename: info for info in archive.infolist()}
    pickles = [name for name in members if name.endswith("data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: a zip file but not a PyTorch checkpoint (no <name>/data.pkl)")
    for info in members.values():  # torch.save stores its members uncompressed
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{path}: {info.filename} uses compression method {info.compress_type}, which PyTorch never writes"
            )
    if members[pickles[0]].file_size > max_pickle_bytes:
        raise CheckpointError(
            f"{path}: {pickles[0]} declares {size_text(members[pickles[0]].file_size)}, more than "
            f"the {size_text(max_pickle_bytes)} an object pickle may have"
        )
    budget.take(
        sum(info.file_size for info in members.values()), "read", f"its {len(members)} archive members (declared sizes)"
    )
    budget.used["read"] = 0  # counted again as they are read
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in members:
        byteorder = _read_member(archive, members[f"{prefix}byteorder"], 16, path).decode().strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"{path}: unknown byteorder record {byteorder!r}")
    cache = {}

    def load_storage(storage_type: _StorageType, key: str, numel: int, view) -> np.ndarray:
        if key not in cache:
            info = members.get(f"{prefix}data/{key}")
            if info is None:
                raise CheckpointError(f"{path}: storage {key} is missing from the archive")
            budget.take(info.file_size, "read", f"storage {key}")
            raw = _read_member(archive, info, info.file_size, path)
            array = storage_type.from_bytes(raw, byteorder)
            if array.size < numel:
                raise CheckpointError(f"{path}: storage {key} holds {array.size} elements, expected {numel}")
            cache[key] = array[:numel]
        if view is not None:
            return cache[key][view[0] : view[0] + view[1]]
        return cache[key]

    data = _read_member(archive, members[pickles[0]], max_pickle_bytes, path)
    obj = _RestrictedUnpickler(io.BytesIO(data), load_storage, str(path), budget).load()
    _check_structure(obj, path)
    return obj


def _read_legacy(path: Path, stream, budget: _Budget, max_pickle_bytes: int):
    def no_storage(*_):
        raise CheckpointError(f"{path}: a storage inside the header")

    file_size = os.fstat(stream.fileno()).st_size
    budget.take(file_size, "read", "the file")
    header = [_RestrictedUnpickler(stream, no_storage, str(path)).load() for _ in range(3)]
    if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL or not isinstance(header[2], dict):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number or protocol)")
    if not header[2].get("little_endian", True):
        raise CheckpointError(f"{path}: big-endian legacy checkpoints are not supported")
    types = {}  # storage key → storage type

    def pending(storage_type, key, numel, view):
        types[key] = storage_type
        return _PendingStorage(key, numel, view)

    start = stream.tell()
    obj = _RestrictedUnpickler(stream, pending, str(path)).load()
    if stream.tell() - start > max_pickle_bytes:
        raise CheckpointError(
            f"{path}: the object pickle has {size_text(stream.tell() - start)}, more than the "
            f"{size_text(max_pickle_bytes)} it may have"
        )
    _check_structure(obj, path)
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
        left = file_size - stream.tell()
        if numel < 0 or numel * itemsize > left:
            raise CheckpointError(
                f"{path}: storage {key} declares {numel:,} elements ({size_text(numel * itemsize)}), "
                f"more than the {size_text(left)} left in the file (truncated?)"
            )
        raw = stream.read(numel * itemsize)
        if len(raw) != numel * itemsize:
            raise CheckpointError(f"{path}: truncated (storage {key})")
        storages[key] = storage_type.from_bytes(raw, "little")
    missing = set(types) - set(storages)
    if missing:
        raise CheckpointError(f"{path}: storage {sorted(missing)[0]} has no data")
    return _resolve_pending(obj, storages, budget)


def _read(path: Path, max_bytes: int, max_pickle_bytes: int):
    budget = _Budget(path, max_bytes)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _read_zip(path, archive, budget, max_pickle_bytes)
        with open(path, "rb") as stream:
            if stream.read(4) == b"PK\x03\x04":
                raise CheckpointError(f"{path}: a zip archive without its directory at the end (truncated?)")
            stream.seek(0)
            return _read_legacy(path, stream, budget, max_pickle_bytes)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError(f"{path}: not enough memory to read it") from None
    except (
        OSError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        OverflowError,
        RecursionError,
        struct.error,
    ) as error:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint "
            f"({error.__class__.__name__}: {' '.join(str(error).split())[:200]})"
        ) from None


def load_checkpoint(path, max_bytes: int = DEFAULT_MAX_BYTES, max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES):
    """The object saved in a PyTorch checkpoint file, tensors as NumPy arrays (module docstring).

    ``max_bytes``: at most this many bytes are read, and at most this many built as tensors;
    ``max_pickle_bytes``: the size the object pickle may have.
    """
    return _read(Path(path), max_bytes, max_pickle_bytes)
