"""Tests of d2im_tf.interop.torch_checkpoint: PyTorch checkpoints read without PyTorch, refusing foreign code.

The main fixture is a real ``torch.save`` file in the authors' checkpoint format
(``fixtures/reference/tiny_checkpoint.pt.tar``: the D²IM-Net tensors of ≤ 512 elements under the
parity formula, ``image_encoder.bn1.num_batches_tracked = 7``, epoch 3, bestloss 0.125).
"""
import pickle
import pickletools
import struct
import zipfile

import numpy as np
import pytest

from d2im_tf.interop.torch_checkpoint import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    CheckpointError,
    _rebuild_tensor,
    load_checkpoint,
)

from parity_helpers import FIXTURES, formula_tensor, state_dict_keys, write_torch_zip

TINY = FIXTURES / "tiny_checkpoint.pt.tar"


def expected_tiny_state_dict():
    """The formula's D²IM-Net entries of ≤ 512 elements (numbered in the full state dict), as saved."""
    expected = {}
    for index, (key, shape) in enumerate(state_dict_keys("d2im")):
        if int(np.prod(shape)) <= 512 and not key.endswith("num_batches_tracked"):
            expected[key] = formula_tensor(key, shape, index)
    expected["image_encoder.bn1.num_batches_tracked"] = np.array(7, np.int64)
    return expected


def test_reads_the_authors_checkpoint_format():
    checkpoint = load_checkpoint(TINY)
    assert set(checkpoint) == {"epoch", "state_dict", "optimizer", "bestloss"}
    assert checkpoint["epoch"] == 3 and checkpoint["bestloss"] == 0.125
    state_dict = checkpoint["state_dict"]
    expected = expected_tiny_state_dict()
    assert list(state_dict) == list(expected)  # the small entries, in state_dict() order, and one counter
    for key, value in state_dict.items():
        assert value.dtype == expected[key].dtype and value.shape == expected[key].shape, key
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
    assert int(state_dict["image_encoder.bn1.num_batches_tracked"]) == 7


def storage_itemsizes(data_pickle: bytes) -> dict[str, int]:
    """Storage key → bytes per element, from the storage classes named in a checkpoint's pickle."""
    memo, sizes, current, expect_key = {}, {}, None, False
    for opcode, arg, _ in pickletools.genops(data_pickle):
        if opcode.name == "GLOBAL" and arg.startswith("torch ") and arg.endswith("Storage"):
            current, expect_key = 8 if arg == "torch LongStorage" else 4, True
        elif opcode.name == "BINGET" and memo.get(arg) is not None:
            current, expect_key = memo[arg], True
        elif opcode.name == "BINPUT":
            memo[arg] = current if expect_key and current is not None and arg not in memo else memo.get(arg)
        elif opcode.name == "BINUNICODE" and expect_key:
            sizes[arg], expect_key = current, False
    return sizes


def legacy_copy(path, target):
    """The tiny checkpoint rewritten in torch's legacy (pre-1.6) stream format, same object pickle."""
    with zipfile.ZipFile(path) as archive:
        prefix = next(n for n in archive.namelist() if n.endswith("/data.pkl"))[: -len("data.pkl")]
        data_pickle = archive.read(f"{prefix}data.pkl")
        keys = sorted((n[len(prefix) + len("data/"):] for n in archive.namelist() if n.startswith(f"{prefix}data/")),
                      key=int)
        storages = [archive.read(f"{prefix}data/{key}") for key in keys]
    itemsizes = storage_itemsizes(data_pickle)
    with open(target, "wb") as out:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, out, protocol=2)
        out.write(data_pickle)
        pickle.dump(keys, out, protocol=2)
        for key, raw in zip(keys, storages):
            out.write(struct.pack("<q", len(raw) // itemsizes[key]))
            out.write(raw)


def test_reads_the_legacy_format_the_same(tmp_path):
    target = tmp_path / "legacy.pt"
    legacy_copy(TINY, target)
    legacy = load_checkpoint(target)["state_dict"]
    current = load_checkpoint(TINY)["state_dict"]
    assert list(legacy) == list(current)
    for key in current:
        np.testing.assert_array_equal(legacy[key], current[key], err_msg=key)


def test_refuses_any_other_global_without_running_it(tmp_path):
    path = tmp_path / "evil.pth"
    marker = tmp_path / "ran"
    write_torch_zip(path, {"w": np.ones(3, np.float32)}, extra_global=("os", "system"))
    with pytest.raises(CheckpointError, match=r"evil\.pth: refuses to load the global os\.system"):
        load_checkpoint(path)
    assert not marker.exists()
    write_torch_zip(path, {"w": np.ones(3, np.float32)}, extra_global=("builtins", "eval"))
    with pytest.raises(CheckpointError, match=r"builtins\.eval"):
        load_checkpoint(path)


def test_round_trip_of_the_test_writer(tmp_path):
    """The writer the import tests use produces what the reader gives back (dtypes, shapes, nesting)."""
    rng = np.random.default_rng(0)
    obj = {"epoch": 5, "state_dict": {"a.weight": rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
                                      "a.bias": rng.normal(size=4).astype(np.float32),
                                      "n": np.array(9, np.int64), "d": rng.normal(size=(2, 2))}}
    write_torch_zip(tmp_path / "x.pth", obj)
    loaded = load_checkpoint(tmp_path / "x.pth")
    assert loaded["epoch"] == 5
    for key, value in obj["state_dict"].items():
        assert loaded["state_dict"][key].dtype == value.dtype
        np.testing.assert_array_equal(loaded["state_dict"][key], value)


def test_strided_storage_views_are_materialised():
    storage = np.arange(12, dtype=np.float32)
    transposed = _rebuild_tensor(storage, 2, (3, 2), (1, 3))  # a transposed view starting at element 2
    np.testing.assert_array_equal(transposed, np.arange(2, 8, dtype=np.float32).reshape(2, 3).T)
    with pytest.raises(CheckpointError, match="past the end"):
        _rebuild_tensor(storage, 8, (3, 2), (2, 1))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_bad_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "model.pt.tar"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"model\.pt\.tar: ") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)


def test_missing_storage_and_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        load_checkpoint(tmp_path / "absent.pth")
    path = tmp_path / "cut.pth"
    with zipfile.ZipFile(TINY) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            if not item.filename.endswith("/data/5"):
                target.writestr(item, source.read(item))
    with pytest.raises(CheckpointError, match="storage 5 is missing"):
        load_checkpoint(path)
