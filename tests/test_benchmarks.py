"""The benchmarks' entry point and the reference harness of ``tools/benchmark.py train --reference``.

The authors' PyTorch release cannot run here (no PyTorch), so the harness is checked on a fake
checkout written by the test: a ``models/D2IM.py`` with the release's class name, constructor and
``forward`` signature, and a ``torch`` package of the few names the harness uses, both built on NumPy.
The fake model logs what it receives and how long each of its steps took, so the subprocess protocol,
the inputs' shapes and camera, the optimizer's settings, the parsing and the ratio arithmetic are
checked against what the subprocess really did.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from benchmarks import NAMES
from benchmarks.train import IMAGE_SIZE, POINTS, measure_reference, reference_ratios, show
from d2im_tf.errors import UserError

from conftest import ROOT

FAKE_TORCH = '''
import json, os, time
import numpy as np

__version__ = "0.0+fake"
_threads = [0]


def _log(**entry):
    with open(os.environ["FAKE_TORCH_LOG"], "a") as handle:
        handle.write(json.dumps(entry) + "\\n")


class Tensor:
    def __init__(self, array):
        self.array = np.asarray(array)

    @property
    def shape(self):
        return self.array.shape

    def __add__(self, other):
        return Tensor(self.array + other.array)

    def backward(self):
        _log(event="backward", value=float(self.array))


def from_numpy(array):
    return Tensor(array)


def set_num_threads(count):
    _threads[0] = count


def get_num_threads():
    return _threads[0]


def manual_seed(seed):
    _log(event="seed", seed=seed)


from torch import nn, optim  # noqa: E402
'''

FAKE_NN = '''
class Module:
    training = False

    def __call__(self, *args):
        return self.forward(*args)

    def train(self):
        self.training = True
        return self
'''

FAKE_OPTIM = '''
from torch import _log


class Adam:
    def __init__(self, parameters, lr, betas, weight_decay):
        _log(event="adam", parameters=len(list(parameters)), lr=lr, betas=list(betas), weight_decay=weight_decay)

    def zero_grad(self):
        pass

    def step(self):
        _log(event="step")
'''

# The release's class name, constructor and forward signature; a fixed amount of NumPy work per call.
FAKE_D2IM = '''
import time

import numpy as np
import torch
from torch import nn

WORK = np.random.default_rng(0).normal(size=(200, 200))


class D2IM_Net(nn.Module):
    def __init__(self, config):
        torch._log(event="init", exp_name=config.exp_name, img_res=config.img_res, cuda=config.cuda)
        self.weights = [1, 2, 3]

    def parameters(self):
        return iter(self.weights)

    def forward(self, points, values, gradients, mc_image, transmat, scale):
        start = time.perf_counter()
        plus = torch.from_numpy(np.zeros(1)).cuda()  # as the release does; a no-op on the CPU
        assert isinstance(plus, torch.Tensor) and self.training
        homogeneous = np.concatenate([points.array, np.ones(points.shape[:2] + (1,))], axis=2)
        projected = homogeneous @ transmat.array  # [B, N, 3]
        depth = projected[..., 2]
        pixels = projected[..., :2] / depth[..., None]
        product = WORK
        for _ in range(20):
            product = np.tanh(product @ WORK)
        loss = float(np.mean(np.abs(values.array)))
        torch._log(event="forward", seconds=time.perf_counter() - start, loss=loss,
                   shapes={name: list(tensor.shape) for name, tensor in zip(
                       ("points", "values", "gradients", "mc_image", "transmat", "scale"),
                       (points, values, gradients, mc_image, transmat, scale))},
                   min_depth=float(depth.min()), pixel_range=[float(pixels.min()), float(pixels.max())],
                   normal_range=[float(mc_image.array[:, 3:].min()), float(mc_image.array[:, 3:].max())])
        if {FAIL}:
            raise RuntimeError("out of memory in the fake step")
        return torch.Tensor(loss), torch.Tensor(0.5), torch.Tensor(0.25)
'''


def fake_checkout(root, fail=False):
    (root / "torch").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "torch" / "__init__.py").write_text(textwrap.dedent(FAKE_TORCH))
    (root / "torch" / "nn.py").write_text(textwrap.dedent(FAKE_NN))
    (root / "torch" / "optim.py").write_text(textwrap.dedent(FAKE_OPTIM))
    (root / "models" / "D2IM.py").write_text(FAKE_D2IM.replace("{FAIL}", str(fail)))
    return root


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_reference_step_runs_the_checkout_with_the_authors_setting(tmp_path, monkeypatch):
    checkout = fake_checkout(tmp_path / "D2IM-Net")
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("FAKE_TORCH_LOG", str(log))
    measured = measure_reference(checkout, sys.executable, batch=4, steps=2, threads=1)

    entries = read_log(log)
    events = [entry["event"] for entry in entries]
    assert events[:3] == ["seed", "init", "adam"]
    assert events[3:] == ["forward", "backward", "step"] * 3  # one warm-up step, then the 2 timed ones
    init, adam = entries[1], entries[2]
    assert (init["exp_name"], init["img_res"], init["cuda"]) == ("d2im", IMAGE_SIZE, False)
    assert adam == {"event": "adam", "parameters": 3, "lr": 5e-5, "betas": [0.9, 0.999], "weight_decay": 1e-5}
    forwards = [entry for entry in entries if entry["event"] == "forward"]
    assert forwards[0]["shapes"] == {
        "points": [4, POINTS, 3],
        "values": [4, POINTS, 1],
        "gradients": [4, POINTS, 3],
        "mc_image": [4, 6, IMAGE_SIZE, IMAGE_SIZE],
        "transmat": [4, 4, 3],
        "scale": [4],
    }
    # The camera sees the whole box in front of it: positive depths, every point inside the image.
    assert forwards[0]["min_depth"] > 1.0
    assert 0 < forwards[0]["pixel_range"][0] and forwards[0]["pixel_range"][1] < IMAGE_SIZE
    assert -1 <= forwards[0]["normal_range"][0] < 0 < forwards[0]["normal_range"][1] <= 1
    # The loss that was back-propagated is the sum of the three terms the model returned.
    backward = [entry["value"] for entry in entries if entry["event"] == "backward"]
    assert backward == pytest.approx([forward["loss"] + 0.5 + 0.25 for forward in forwards])

    assert measured["torch"] == "0.0+fake" and measured["threads"] == 1
    assert (measured["batch"], measured["points"], measured["image_size"]) == (4, POINTS, IMAGE_SIZE)
    seconds = measured["seconds_per_step"]
    assert len(seconds) == 2
    # Each timed step encloses its forward pass, whose own clock the fake logged.
    for timed, forward in zip(seconds, forwards[1:]):
        assert timed >= forward["seconds"] > 0
    assert measured["mean_seconds_per_step"] == pytest.approx(sum(seconds) / 2)


def test_reference_ratio_is_our_time_over_theirs():
    rows = [
        {"batch": 4, "seconds_per_step": 1.5},
        {"batch": 4, "seconds_per_step": 1.0},
        {"batch": 8, "seconds_per_step": 3.0},
    ]
    reference_ratios(rows, {4: {"mean_seconds_per_step": 2.5}})
    assert [row.get("time_vs_reference") for row in rows] == [pytest.approx(0.6), pytest.approx(0.4), None]


def _result(reference: bool) -> dict:
    row = {
        "batch": 4,
        "precision": "float32",
        "batch_norm": "fused",
        "xla": False,
        "seconds_per_step": 1.5,
        "points_per_second": 5461.0,
        "gflop_per_step": 100.0,
        "gflop_per_second": 66.7,
        "pipeline_over_training": 9.0,
        "time_vs_first": 1.0,
    }
    result = {
        "image_size": IMAGE_SIZE,
        "points": POINTS,
        "variant": "full",
        "rows": [row],
        "breakdown": {},
        "matmul_gflop_per_second": {"float32": 100.0, "mixed_bfloat16": 50.0},
    }
    if reference:
        measured = {"mean_seconds_per_step": 2.5, "seconds_per_step": [2.4, 2.6], "torch": "2.5.1", "threads": 2}
        result["reference"] = {"checkout": "/src/D2IM-Net", "python": "python3", "by_batch": {"4": measured}}
        reference_ratios(result["rows"], {4: measured})
    return result


def test_report_prints_a_ratio_only_when_the_reference_was_measured(capsys):
    show(_result(reference=False))
    assert "reference" not in capsys.readouterr().out
    show(_result(reference=True))
    out = capsys.readouterr().out
    header, row = [line for line in out.splitlines() if "× reference" in line or line.strip().startswith("4 ")][:2]
    assert header.split()[-2:] == ["×", "reference"] and row.split()[-1] == "0.60"
    assert "batch 4: 2.50 s/step (float32, torch 2.5.1, 2 threads, mean of 2 steps" in out


def test_reference_failures_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TORCH_LOG", str(tmp_path / "log.jsonl"))
    with pytest.raises(UserError, match="not a checkout of the authors' D²IM-Net release"):
        measure_reference(tmp_path, sys.executable, 4, 1)
    failing = fake_checkout(tmp_path / "failing", fail=True)
    with pytest.raises(UserError, match=r"training step failed .*RuntimeError: out of memory in the fake step"):
        measure_reference(failing, sys.executable, 4, 1)
    with pytest.raises(UserError, match="no-such-python: cannot run it"):
        measure_reference(failing, str(tmp_path / "no-such-python"), 4, 1)


def test_entry_point_lists_every_benchmark_and_the_reference_options():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert listed == list(NAMES) == ["data", "reconstruct", "convert", "train", "fit", "transfer", "app"]
    train = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--reference DIR" in train.stdout and "--reference-python PYTHON" in train.stdout
