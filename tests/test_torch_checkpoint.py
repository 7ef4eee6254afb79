"""Tests of d2im_tf.interop.torch_checkpoint: PyTorch checkpoints read without PyTorch, refusing foreign code.

The main fixture is a real ``torch.save`` file in the authors' checkpoint format
(``fixtures/reference/tiny_checkpoint.pt.tar``: the D²IM-Net tensors of ≤ 512 elements under the
parity formula, ``image_encoder.bn1.num_batches_tracked = 7``, epoch 3, bestloss 0.125).
"""

import os
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from d2im_tf.interop.torch_checkpoint import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    CheckpointError,
    _rebuild_tensor,
    checkpoint_limits,
    load_checkpoint,
)

from parity_helpers import FIXTURES, Strided, formula_tensor, plant_bomb, state_dict_keys, write_torch_zip

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


def legacy_copy(path, target, counts: dict | None = None):
    """The tiny checkpoint rewritten in torch's legacy (pre-1.6) stream format, same object pickle;
    ``counts`` (storage key → element count) overrides the counts written before the storages' bytes."""
    with zipfile.ZipFile(path) as archive:
        prefix = next(n for n in archive.namelist() if n.endswith("/data.pkl"))[: -len("data.pkl")]
        data_pickle = archive.read(f"{prefix}data.pkl")
        keys = sorted(
            (n[len(prefix) + len("data/") :] for n in archive.namelist() if n.startswith(f"{prefix}data/")), key=int
        )
        storages = [archive.read(f"{prefix}data/{key}") for key in keys]
    itemsizes = storage_itemsizes(data_pickle)
    write_legacy(
        target, data_pickle, {key: (len(raw) // itemsizes[key], raw) for key, raw in zip(keys, storages)}, counts
    )


def write_legacy(target, data_pickle: bytes, storages: dict, counts: dict | None = None):
    """A legacy-format file: the header, ``data_pickle``, the key list, each storage (count, bytes)."""
    with open(target, "wb") as out:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, out, protocol=2)
        out.write(data_pickle)
        pickle.dump(list(storages), out, protocol=2)
        for key, (count, raw) in storages.items():
            out.write(struct.pack("<q", (counts or {}).get(key, count)))
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
    obj = {
        "epoch": 5,
        "state_dict": {
            "a.weight": rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
            "a.bias": rng.normal(size=4).astype(np.float32),
            "n": np.array(9, np.int64),
            "d": rng.normal(size=(2, 2)),
        },
    }
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


# ---------------------------------------------------------------------------------------------
# Hostile files: each is crafted here and read in a process limited to 2 GB of address space and
# 60 s, so a regression fails instead of exhausting the machine.

ROOT = Path(__file__).resolve().parents[1]
D2IM_VALUES, D2IM_VARIABLES = 12_190_187, 140  # the authors' D²IM-Net (parity README; its assignments)
BOUNDED_READ = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from d2im_tf.interop.torch_checkpoint import CheckpointError, load_checkpoint
try:
    load_checkpoint(sys.argv[1], *map(int, sys.argv[2:]))
except CheckpointError as error:
    print(error)
    sys.exit(2)
print("loaded")
"""


def read_bounded(path, limits=None) -> tuple[int, str]:
    """(exit code, output) of reading ``path`` within the limits an import of the authors' D²IM-Net uses."""
    limits = checkpoint_limits(D2IM_VALUES, D2IM_VARIABLES) if limits is None else limits
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", BOUNDED_READ, str(path), *map(str, limits)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


def test_limits_of_the_authors_network_admit_its_checkpoint_and_stay_small():
    max_bytes, max_pickle = checkpoint_limits(D2IM_VALUES, D2IM_VARIABLES)
    assert 3 * 8 * D2IM_VALUES < max_bytes < (2 << 30) // 4  # weights + Adam's two moments in float64 fit
    assert 100_000 < max_pickle < 4 << 20


def test_a_stride_0_view_of_one_element_is_not_materialised(tmp_path):
    """What ``torch.zeros(1).expand(10**6, 10**6)`` saves: 4 TB if materialised, from a ~600-byte file."""
    path = tmp_path / "expand.pt"
    write_torch_zip(path, {"w": Strided(np.zeros(1, np.float32), (10**6, 10**6), (0, 0))})
    code, output = read_bounded(path)
    assert code == 2 and "expand.pt: a tensor of size [1000000, 1000000] would need 4.0 TB" in output, output
    write_torch_zip(path, {"w": Strided(np.zeros(1, np.float32), (30000, 30000), (0, 0))})
    code, output = read_bounded(path)  # 30000² floats: 3.6 GB
    assert code == 2 and "would need 3.6 GB" in output, output
    # a legitimate broadcast view within the limits is materialised with its values
    write_torch_zip(path, {"w": Strided(np.arange(3, dtype=np.float32), (2, 3), (0, 1))})
    np.testing.assert_array_equal(load_checkpoint(path)["w"], [[0, 1, 2], [0, 1, 2]])


@pytest.mark.parametrize("member", ["data/0", "data.pkl"])
def test_a_zip_bomb_is_refused_from_its_declared_size(tmp_path, member):
    """1 GiB of zeros in a 1 MB member (64 MiB as the pickle): declared beyond the limits, nothing is inflated."""
    path = tmp_path / "bomb.pt"
    write_torch_zip(path, {"w": np.zeros(4, np.float32)})
    plant_bomb(path, member, 64 << 20 if member == "data.pkl" else 1 << 30)
    assert path.stat().st_size < 2 << 20
    code, output = read_bounded(path)
    assert code == 2, output
    if member == "data.pkl":
        assert "bomb/data.pkl declares 67.1 MB, more than the 1.6 MB an object pickle may have" in output
    else:
        assert "archive members (declared sizes) would need 1.1 GB, beyond the 406." in output


def test_a_zip_member_lying_about_its_size_is_read_no_further(tmp_path):
    """A member declaring 16 bytes that inflates to 1 GiB: reading stops at 16 and the CRC fails."""
    path = tmp_path / "liar.pt"
    write_torch_zip(path, {"w": np.zeros(4, np.float32)})
    plant_bomb(path, "data/0", 1 << 30, declared=16)
    code, output = read_bounded(path)
    assert code == 2 and "liar.pt: not a readable PyTorch checkpoint (BadZipFile: Bad CRC-32" in output, output
    write_torch_zip(path, {"w": np.zeros(4, np.float32)})
    plant_bomb(path, "data.pkl", 1 << 30, declared=100)
    code, output = read_bounded(path)
    assert code == 2 and "liar.pt: not a readable PyTorch checkpoint" in output, output


def test_legacy_storage_counts_are_checked_against_the_file(tmp_path):
    path = tmp_path / "legacy.pt"
    legacy_copy(TINY, path, counts={"0": 10**12})
    code, output = read_bounded(path)
    assert code == 2 and "legacy.pt: storage 0 declares 1,000,000,000,000 elements (4.0 TB), more than the" in output
    assert "left in the file (truncated?)" in output


def shared_lists(levels: int) -> list:
    """Lists two wide and ``levels`` deep, each level holding the one below twice: 2^levels leaves."""
    value = []
    for _ in range(levels):
        value = [value, value]
    return value


@pytest.mark.parametrize("form", ["zip", "legacy"])
def test_pickle_nesting_and_self_reference_are_one_line(tmp_path, form):
    def write(obj):
        path = tmp_path / f"nested.{form}"
        data = pickle.dumps(obj, protocol=2)
        if form == "legacy":
            write_legacy(path, data, {})
        else:
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("nested/data.pkl", data)
        return path

    code, output = read_bounded(write(shared_lists(80)))
    assert code == 2 and "containers nested more than 64 levels deep" in output, output
    loaded = load_checkpoint(write(shared_lists(60)))  # deep sharing within the limit stays shared
    assert loaded[0] is loaded[1] and loaded[0][0][0] is loaded[1][1][1]
    looped = []
    looped.append(looped)
    code, output = read_bounded(write({"state_dict": looped}))
    assert code == 2 and f"nested.{form}: a list contains itself" in output, output


def test_a_truncated_zip_checkpoint_says_so(tmp_path):
    path = tmp_path / "cut.pt.tar"
    path.write_bytes(TINY.read_bytes()[: TINY.stat().st_size // 2])
    with pytest.raises(
        CheckpointError,
        match=r"cut\.pt\.tar: a zip archive without its directory at the end "
        r"\(truncated\?\)",
    ):
        load_checkpoint(path)
