"""Test helpers for the PyTorch import: the parity fixtures' weight formula and a torch-format writer.

``formula_state_dict`` regenerates the weights the parity fixtures were computed with
(``tests/fixtures/reference/README.md``). ``write_torch_zip`` writes a state dict the way
``torch.save`` does (zip archive, protocol-2 pickle with persistent storage ids), so the reader is
exercised on files this project did not make with its own reader in mind; it emits the pickle opcodes
directly because pickling references to ``torch`` globals would need torch importable.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "reference"


def state_dict_keys(network: str) -> list[tuple[str, tuple[int, ...]]]:
    """``[(key, shape)]`` of the authors' ``d2im`` or ``camnet`` state dict, in ``state_dict()`` order."""
    entries = json.loads((FIXTURES / "state_dict_keys.json").read_text())[f"{network}_state_dict"]
    return [(key, tuple(shape)) for key, shape in entries]


def formula_tensor(key: str, shape: tuple[int, ...], index: int, chunk: int = 1 << 22) -> np.ndarray:
    """Entry number ``index`` of a state dict under the parity fixtures' formula (computed in float64,
    ``chunk`` elements at a time so that VGG's 10⁸-element layer stays within memory)."""
    count = int(np.prod(shape, dtype=np.int64))
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    out = np.empty(count, np.float32)
    for start in range(0, count, chunk):
        j = np.arange(start, min(start + chunk, count), dtype=np.float64)
        t = np.sin(0.6180339887 * j + 0.37 * index) * np.cos(0.001 * j + index)
        if key.endswith("running_var"):
            values = 1.0 + 0.25 * t**2
        elif key.endswith("running_mean"):
            values = 0.1 * t
        elif len(shape) == 1 and key.endswith("weight"):
            values = 1.0 + 0.1 * t
        elif len(shape) == 1:
            values = 0.05 * t
        else:
            values = t * np.sqrt(3.0 / np.prod(shape[1:]))
        out[start : start + len(j)] = values
    return out.reshape(shape)


def formula_state_dict(entries) -> dict[str, np.ndarray]:
    """The formula's state dict for ``[(key, shape)]`` entries numbered in order."""
    return {key: formula_tensor(key, shape, index) for index, (key, shape) in enumerate(entries)}


# ---------------------------------------------------------------------------------------------
# A minimal torch.save: zip archive with data.pkl (protocol 2) and one storage per tensor.

_STORAGES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.float64): "DoubleStorage",
}


def _string(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return pickle.BININT + struct.pack("<i", value)


def _int_tuple(values) -> bytes:
    return pickle.MARK + b"".join(_int(v) for v in values) + pickle.TUPLE


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _ordered_dict() -> bytes:
    return _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


class Strided:
    """A tensor as a view of a flat ``storage``: what ``torch.zeros(1).expand(n, n)`` saves is
    ``Strided(np.zeros(1, np.float32), (n, n), (0, 0))``."""

    def __init__(self, storage: np.ndarray, shape, stride, offset: int = 0):
        self.storage, self.shape, self.stride, self.offset = storage.ravel(), tuple(shape), tuple(stride), offset


def write_torch_zip(path, obj, tensors: dict | None = None, extra_global: tuple[str, str] | None = None):
    """Write ``obj`` (nested dicts of str → ndarray | :class:`Strided` | int) as torch.save's zip format.

    ``extra_global`` (module, name) adds a call of that global to the pickle, to test refusal.
    """
    storages = []

    def emit(value) -> bytes:
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            stride = [int(s // array.itemsize) for s in array.strides] if array.ndim else []
            value = Strided(array, array.shape, stride)
        if isinstance(value, Strided):
            key = str(len(storages))
            array = value.storage
            storages.append((key, array))
            storage = (
                pickle.MARK
                + _string("storage")
                + _global("torch", _STORAGES[array.dtype])
                + _string(key)
                + _string("cpu")
                + _int(array.size)
                + pickle.TUPLE
                + pickle.BINPERSID
            )
            return (
                _global("torch._utils", "_rebuild_tensor_v2")
                + pickle.MARK
                + storage
                + _int(value.offset)
                + _int_tuple(value.shape)
                + _int_tuple(value.stride)
                + pickle.NEWFALSE
                + _ordered_dict()
                + pickle.TUPLE
                + pickle.REDUCE
            )
        if isinstance(value, dict):
            items = b"".join(_string(k) + emit(v) for k, v in value.items())
            return _ordered_dict() + pickle.MARK + items + pickle.SETITEMS
        if isinstance(value, (int, np.integer)):
            return _int(int(value))
        raise TypeError(type(value))

    body = emit(obj)
    if extra_global is not None:  # a dict {"payload": module.name(0)} merged into the top level
        body += _string("payload") + _global(*extra_global) + _int_tuple([0]) + pickle.REDUCE + pickle.SETITEM
    data = pickle.PROTO + b"\x02" + body + pickle.STOP
    name = Path(path).name.split(".")[0] or "archive"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{name}/data.pkl", data)
        archive.writestr(f"{name}/byteorder", "little")
        for key, array in storages:
            archive.writestr(f"{name}/data/{key}", array.astype(array.dtype.newbyteorder("<")).tobytes())
        archive.writestr(f"{name}/version", "3\n")


def torchvision_entries(network: str) -> list[tuple[str, tuple[int, ...]]]:
    """Keys and shapes of torchvision's ``resnet18`` / ``vgg16`` state dicts, in their order.

    They are the authors' encoders without their prefix (``image_encoder.`` / ``vgg.``) and
    without the layers the authors added (``fc1``; the pose heads): the same modules.
    """
    if network == "resnet18":
        return [
            (key[len("image_encoder.") :], shape)
            for key, shape in state_dict_keys("d2im")
            if key.startswith("image_encoder.") and not key.startswith("image_encoder.fc1.")
        ]
    return [(key[len("vgg.") :], shape) for key, shape in state_dict_keys("camnet") if key.startswith("vgg.")]


# ---------------------------------------------------------------------------------------------
# Hostile files: zip members that inflate far beyond their size, or declare sizes they do not have.


def zero_deflate(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes (a multiple of 1 MiB), about 1 kB per MiB: the
    compressor's output for a MiB of zeros after a full flush repeats, so it is built by repetition."""
    assert size % (1 << 20) == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return chunk * (size >> 20) + compressor.flush()


def plant_bomb(path, suffix: str, size: int, declared: int | None = None) -> None:
    """Rewrite the zip at ``path``: its member ending in ``suffix`` becomes ``size`` deflated zero bytes,
    whose headers declare ``declared`` (default ``size``) bytes uncompressed (below 4 GiB: no ZIP64)."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    bomb = zero_deflate(size)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, bomb if name.endswith(suffix) else data)
    raw = bytearray(Path(path).read_bytes())
    name = next(name for name, _ in members if name.endswith(suffix)).encode()
    # (signature, offset of the name length, offset of the name, of the method, of the uncompressed size)
    for signature, length_at, name_at, method_at, size_at in (
        (b"PK\x03\x04", 26, 30, 8, 22),
        (b"PK\x01\x02", 28, 46, 10, 24),
    ):
        start = 0
        while (start := raw.find(signature, start)) >= 0:
            (length,) = struct.unpack_from("<H", raw, start + length_at)
            if raw[start + name_at : start + name_at + length] == name:
                struct.pack_into("<H", raw, start + method_at, zipfile.ZIP_DEFLATED)
                struct.pack_into("<I", raw, start + size_at, size if declared is None else declared)
            start += 4
    Path(path).write_bytes(bytes(raw))
