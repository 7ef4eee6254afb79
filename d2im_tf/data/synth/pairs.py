"""Ground truth for detail transfer: pairs of shapes of one family that differ in their relief.

Pair ``i`` of a category (every random choice from ``SeedSequence([seed, crc32(category), i])``):

* **target**: a shape of the family (:mod:`d2im_tf.data.synth.shapes`) with its own relief;
* **rebuilt**: the target's parts with every relief redrawn (same face, same amplitude, a new
  pattern) — the target rebuilt with the source's relief, the transfer's ground truth;
* **source**: the rebuilt shape stretched by a random factor per axis (0.85–1.15), so that the two
  images show different coarse shapes and the box correspondence of ``d2im transfer`` has to map one
  onto the other (it maps the stretched relief back exactly);
* **coarse**: the target's parts without relief (the coarse surface the relief is measured against).

Each is meshed and normalised as a dataset's shape (centred, bounding diagonal 0.8, world frame;
the source after its stretch). Target and source are rendered from one random front-facing view each
(azimuth 50–130°, where the reliefs' faces point, elevation 5–35°, distance ratio 0.65–0.9), and
each has DISN's norm params. Layout under ``OUT``::

    pairs.json                      # per pair: category, name, seed, mesh resolution, views, norm params
    <category>/<pair>/{target,source,rebuilt,coarse}.obj
    <category>/<pair>/{target,source}.png   # RGBA renders
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import numpy as np
import trimesh

from d2im_tf.data import disn_format as fmt
from d2im_tf.data.render import Renderer
from d2im_tf.data.synth import mesh_sdf, shapes
from d2im_tf.data.synth.generate import random_color, write_obj
from d2im_tf.data.synth.relief import random_relief
from d2im_tf.geometry import camera

STRETCH = (0.85, 1.15)
FRONT_AZIMUTH, ELEVATION, DISTANCE = (50.0, 130.0), (5.0, 35.0), (0.65, 0.9)
MESHES = ("target", "source", "rebuilt", "coarse")


def pair_name(index: int) -> str:
    return f"pair{index:05d}"


def front_view(rng: np.random.Generator) -> np.ndarray:
    """A metadata row seeing the shapes' front (+z) faces."""
    return np.array(
        [
            rng.uniform(*FRONT_AZIMUTH),
            rng.uniform(*ELEVATION),
            0.0,
            rng.uniform(*DISTANCE),
            camera.FOCAL_MM,
            camera.SENSOR_MM,
            camera.MAX_DISTANCE,
            0.0,
            0.0,
            0.0,
        ]
    )


def redrawn(parts: list[shapes.Part], rng: np.random.Generator) -> list[shapes.Part]:
    """The parts with each relief replaced by a new random one of the same face and amplitude."""
    out = []
    for part in parts:
        if part.relief is not None:
            layers = part.relief.layers
            amplitude = max(abs(a) for _, a in layers) * len(layers) ** 0.5  # what the family asked for
            part = dataclasses.replace(part, relief=random_relief(rng, part.relief.hx, part.relief.hy, amplitude))
        out.append(part)
    return out


def stretched(mesh: trimesh.Trimesh, factors) -> trimesh.Trimesh:
    """``mesh`` scaled by ``factors`` per axis, then centred and scaled back to the bounding diagonal."""
    vertices = mesh.vertices * np.asarray(factors, float)
    lower, upper = vertices.min(axis=0), vertices.max(axis=0)
    vertices = (vertices - (lower + upper) / 2) * (shapes.WORLD_DIAGONAL / np.linalg.norm(upper - lower))
    return trimesh.Trimesh(vertices, mesh.faces, process=False)


def pair_streams(seed: int, category: str, index: int) -> list[np.random.Generator]:
    """The generators of pair ``index``: geometry, relief, views, colour."""
    root = np.random.SeedSequence([seed, zlib.crc32(category.encode()), index])
    return [np.random.default_rng(s) for s in root.spawn(4)]


def pair_parts(category: str, rng_geometry, rng_relief) -> tuple[list, list]:
    """The target's parts and the rebuilt ones (every relief redrawn)."""
    parts = shapes.FAMILIES[category](rng_geometry)
    return parts, redrawn(parts, rng_relief)


def _placement(target: trimesh.Trimesh) -> tuple[np.ndarray, float]:
    """Centre (3,) and scale of the marched target that put it into the world frame."""
    lower, upper = target.vertices.min(axis=0), target.vertices.max(axis=0)
    return (lower + upper) / 2, shapes.WORLD_DIAGONAL / np.linalg.norm(upper - lower)


def _placed(mesh: trimesh.Trimesh, centre, scale: float) -> trimesh.Trimesh:
    return trimesh.Trimesh((mesh.vertices - centre) * scale, mesh.faces, process=False)


def pair_meshes(category: str, rng_geometry, rng_relief, resolution: int) -> dict[str, trimesh.Trimesh]:
    """The four meshes of one pair (module docstring), world frame; rebuilt and coarse in the target's
    placement: all three are normalised by the target's own centring and scale."""
    parts, rebuilt_parts = pair_parts(category, rng_geometry, rng_relief)
    spacing = shapes.grid_spacing(parts, resolution)
    raw = {
        key: shapes.closed_mesh(*shapes.march_parts(p, spacing))
        for key, p in (("target", parts), ("rebuilt", rebuilt_parts), ("coarse", shapes.without_relief(parts)))
    }
    centre, scale = _placement(raw["target"])
    meshes = {key: _placed(mesh, centre, scale) for key, mesh in raw.items()}
    meshes["source"] = stretched(meshes["rebuilt"], rng_relief.uniform(*STRETCH, size=3))
    return {key: trimesh.Trimesh(np.round(meshes[key].vertices, 6), meshes[key].faces, process=False) for key in MESHES}


def remarched(root: Path, entry: dict, step: float) -> dict[str, trimesh.Trimesh]:
    """The pair's ``target`` and ``rebuilt`` shapes marched again at the world-frame grid step ``step``
    (a reconstruction's), in the pair's placement, rebuilt from the seed in ``entry``: the best any
    field sampled at that step can show of either relief (the transfer benchmark's references)."""
    folder = root / entry["category"] / entry["pair"]
    if "seed" not in entry:
        raise fmt.DataError(root / "pairs.json", "has no seed (pairs written before it was recorded); write them again")
    index = int(entry["pair"].removeprefix("pair"))
    rng_geometry, rng_relief, _, _ = pair_streams(entry["seed"], entry["category"], index)
    parts, rebuilt_parts = pair_parts(entry["category"], rng_geometry, rng_relief)
    target = shapes.closed_mesh(*shapes.march_parts(parts, shapes.grid_spacing(parts, entry["resolution"])))
    centre, scale = _placement(target)
    stored = trimesh.load(folder / "target.obj", force="mesh", process=False)
    if len(stored.vertices) != len(target.vertices) or not np.allclose(
        stored.vertices, _placed(target, centre, scale).vertices, atol=2e-6
    ):
        raise fmt.DataError(folder / "target.obj", f"is not the shape the generator makes with seed {entry['seed']}")
    return {
        key: _placed(shapes.closed_mesh(*shapes.march_parts(p, step / scale)), centre, scale)
        for key, p in (("target", parts), ("rebuilt", rebuilt_parts))
    }


def write_pair(out: Path, category: str, index: int, seed: int, image_size: int, resolution: int) -> dict:
    """Every file of pair ``index`` under ``out``; returns its ``pairs.json`` entry."""
    rng_geometry, rng_relief, rng_views, rng_color = pair_streams(seed, category, index)
    meshes = pair_meshes(category, rng_geometry, rng_relief, resolution)
    folder = out / category / pair_name(index)
    color = random_color(rng_color)
    entry = {"category": category, "pair": pair_name(index), "seed": seed, "resolution": resolution}
    for key, mesh in meshes.items():
        write_obj(folder / f"{key}.obj", mesh)
    for key in ("target", "source"):
        row = front_view(rng_views)
        fmt.write_png(folder / f"{key}.png", Renderer(meshes[key], color).render(row, image_size).rgba)
        centre, scale, _ = mesh_sdf.normalization(meshes[key], np.random.default_rng(index))
        entry[f"{key}_view"] = row.tolist()
        entry[f"{key}_norm_params"] = [*np.asarray(centre, float).tolist(), float(scale)]
    return entry


def make_pairs(
    out,
    categories,
    count: int,
    seed: int = 0,
    image_size: int = 224,
    resolution: int = shapes.DEFAULT_RESOLUTION,
    progress: bool = True,
) -> list[dict]:
    """``count`` pairs per category under ``out`` and ``out/pairs.json``; returns its entries."""
    from tqdm import tqdm

    out = Path(out)
    tasks = [(category, index) for category in categories for index in range(count)]
    entries = [
        write_pair(out, category, index, seed, image_size, resolution)
        for category, index in tqdm(tasks, desc="pairs", unit="pair", disable=not progress)
    ]
    with fmt.atomic_path(out / "pairs.json") as tmp:
        tmp.write_text(json.dumps(entries, indent=1) + "\n")
    return entries


def read_pairs(out) -> list[dict]:
    """The entries of ``out/pairs.json``."""
    path = Path(out) / "pairs.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise fmt.DataError(path, "not found; write the pairs with 'd2im make-data --transfer-pairs N'") from None
    except ValueError as error:
        raise fmt.DataError(path, f"not valid JSON ({error})") from None
