"""The authors' PyTorch training step, timed: run by ``tools/benchmark.py train --reference DIR``.

Runs in a subprocess under a Python that has PyTorch (``--reference-python``), never inside this
project's environment, and imports nothing of this project: only NumPy, PyTorch and the user's checkout
of the authors' D²IM-Net release (``DIR``, put first on ``sys.path``). Nothing of their code is copied
here; this script calls it as their ``train.py`` does:

* ``models.D2IM.D2IM_Net(config)`` with ``config.exp_name = "d2im"``, ``img_res``, ``model_dir`` and
  ``cuda``;
* ``model(points, values, gradients, mc_image, transmat, scale)`` → ``(loss_base, loss_sdf,
  loss_laplacian)``, their sum back-propagated and one step of ``torch.optim.Adam`` (their settings:
  learning rate 5e-5, betas (0.9, 0.999), weight decay 1e-5).

Inputs, shaped as their data loader batches them (``B`` shapes of ``N`` points, image size ``S``):
``points`` [B, N, 3] in the normalised box, ``values`` [B, N, 1] (SDF × 10), ``gradients`` [B, N, 3]
(unit vectors), ``mc_image`` [B, 6, S, S] (RGB in [0, 1], then a normal map in [-1, 1]), ``transmat``
[B, 4, 3] (the transposed 3×4 projection: a pinhole of DISN's focal length 35 mm on a 32 mm sensor,
2 units in front of the box, so every point projects into the image at a positive depth) and
``scale`` [B]. Random values with a fixed seed: the step's cost does not depend on them.

Adjustments, so that their step runs on this machine's CPU like ours: ``Tensor.cuda`` and
``Module.cuda`` return their argument (their forward pass moves helper tensors to the GPU
unconditionally), and torchvision's ``resnet18`` is built without its ImageNet weights (their encoder
asks for them, which would download them; the weights do not change the step's cost).

Output: one JSON line on stdout, ``{"seconds_per_step": [...], "torch": version, "threads": n,
"batch": B, "points": N, "image_size": S}``; each timed step after ``--warmup`` untimed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

import numpy as np

FOCAL_MM, SENSOR_MM = 35.0, 32.0  # DISN's Blender camera
CAMERA_DISTANCE = 2.0  # from the camera to the box's centre, along the optical axis


def projection(image_size: int) -> np.ndarray:
    """The transposed 3×4 projection [4, 3] of a pinhole looking at the origin from ``CAMERA_DISTANCE``."""
    focal = FOCAL_MM * image_size / SENSOR_MM
    intrinsics = np.array([[focal, 0, image_size / 2], [0, focal, image_size / 2], [0, 0, 1]])
    extrinsics = np.hstack([np.eye(3), [[0.0], [0.0], [CAMERA_DISTANCE]]])  # [3, 4]
    return (intrinsics @ extrinsics).T.astype(np.float32)


def inputs(batch: int, points: int, image_size: int, seed: int = 0) -> dict:
    """The training step's inputs as NumPy arrays (module docstring)."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-0.5, 0.5, (batch, points, 3)).astype(np.float32)
    gradients = rng.normal(size=(batch, points, 3))
    gradients /= np.linalg.norm(gradients, axis=-1, keepdims=True)
    image = np.concatenate(
        [rng.uniform(0, 1, (batch, 3, image_size, image_size)), rng.uniform(-1, 1, (batch, 3, image_size, image_size))],
        axis=1,
    )
    return {
        "points": xyz,
        "values": (10.0 * (np.linalg.norm(xyz, axis=-1, keepdims=True) - 0.3)).astype(np.float32),
        "gradients": gradients.astype(np.float32),
        "mc_image": image.astype(np.float32),
        "transmat": np.repeat(projection(image_size)[None], batch, axis=0),
        "scale": rng.uniform(0.5, 1.0, batch).astype(np.float32),
    }


def _run_on_cpu(torch) -> None:
    """``.cuda()`` as a no-op, and torchvision's ResNet18 without downloaded weights (module docstring)."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        import torchvision
    except ImportError:
        return
    build = torchvision.models.resnet18
    torchvision.models.resnet18 = lambda *args, **kwargs: build()  # no weights: nothing is downloaded


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="the authors' D²IM-Net repository (holds models/D2IM.py)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.abspath(args.checkout))
    import torch

    _run_on_cpu(torch)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from models.D2IM import D2IM_Net

    config = types.SimpleNamespace(
        exp_name="d2im",
        img_res=args.image_size,
        cuda=False,
        model_dir=os.path.join(os.path.abspath(args.checkout), "ckpt", "models"),
    )
    model = D2IM_Net(config)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.9, 0.999), weight_decay=1e-5)
    batch = {name: torch.from_numpy(value) for name, value in inputs(args.batch, args.points, args.image_size).items()}

    def step():
        loss_base, loss_sdf, loss_laplacian = model(
            batch["points"], batch["values"], batch["gradients"], batch["mc_image"], batch["transmat"], batch["scale"]
        )
        loss = loss_base + loss_sdf + loss_laplacian
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "seconds_per_step": seconds,
                "torch": str(torch.__version__),
                "threads": torch.get_num_threads(),
                "batch": args.batch,
                "points": args.points,
                "image_size": args.image_size,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
