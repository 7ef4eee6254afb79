"""Dataset orchestration: one mesh → every file of a shape; many shapes across worker processes.

A shape's files (DISN layout, see :mod:`d2im_tf.data.disn_format`): the mesh ``meshes/.../model.obj``,
``SDF_v1/.../ori_sample.h5`` (samples, gradients, densities), and per view the RGBA render, the
``_mnormal`` normal map and the 16-bit depth map, plus ``rendering_metadata.txt``. With
``Settings.coarse_sdf``, also the shape without its relief (``coarse.obj``) and its SDF at the same
samples; added to finished shapes by regenerating them from their seeds.

Every random choice of a shape comes from ``SeedSequence([seed, crc32(category), index])`` split
into independent streams (geometry, colour, views, samples, appearance, framing), so output bytes depend only on the
arguments — not on the number of workers or on the order in which shapes finish. No file holds a
timestamp (PNG via Pillow without metadata, HDF5 without ``track_times``, OBJ without a date).
"""

from __future__ import annotations

import colorsys
import multiprocessing
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import trimesh
from tqdm import tqdm

from d2im_tf.data import disn_format as fmt
from d2im_tf.data.categories import CATEGORY_NAMES
from d2im_tf.data.render import Renderer, View, framed_views, random_views
from d2im_tf.data.synth import mesh_sdf, shapes, shapes_extra
from d2im_tf.data.synth.appearance import mesh_groups, random_look, random_view_style
from d2im_tf.errors import UserError
from d2im_tf.io import atomic_path

MESH_DIGITS = 6  # OBJ coordinates are written (and used) rounded to 1e-6
# With ``framing``, each generated shape is moved off the origin (the cameras' target) by up to this
# share of its bounding diagonal along each axis, so it sits off the image centre as in other datasets.
FRAMING_OFFSET = 0.06


@dataclass(frozen=True)
class Settings:
    """What every shape of a dataset shares."""

    out: Path
    views: int = 36
    image_size: int = 224
    samples: int = mesh_sdf.SAMPLE_COUNT
    seed: int = 0
    resolution: int = shapes.DEFAULT_RESOLUTION
    # Options off by default (make-data records them only when set; :mod:`d2im_tf.data.synth.appearance`):
    appearance: bool = False  # per-part materials, random lights, supersampled RGB
    plain_share: float = 0.0  # with ``appearance``: the share of views that keep the plain render
    render_sizes: tuple[int, ...] = ()  # RGB rendered at one of these sizes, resampled to image_size
    supersample: int = 3  # rays per pixel along each axis with ``appearance``
    framing: tuple[float, float] | None = None  # object span range (share of the image side)
    families: str = "classic"  # "extended": the classic families and those of shapes_extra; or one family's name
    coarse_sdf: bool = False  # also the SDF of the shape without its relief at the same samples

    @property
    def layout(self) -> fmt.DatasetLayout:
        return fmt.DatasetLayout(self.out)


def shape_name(index: int) -> str:
    return f"syn{index:05d}"


def shape_streams(seed: int, category: str, index: int) -> dict[str, np.random.Generator]:
    """Independent generators for the geometry, colour, views, samples, appearance and framing of one shape."""
    root = np.random.SeedSequence([seed, zlib.crc32(category.encode()), index])
    names = ("geometry", "color", "views", "samples", "appearance", "framing")
    return {name: np.random.default_rng(child) for name, child in zip(names, root.spawn(len(names)))}


@dataclass
class GeneratedShape:
    """A generated shape in the world frame, closed and wound outwards."""

    mesh: trimesh.Trimesh
    # with ``Settings.appearance``: (part of each face [F], which parts are rod-like [P])
    groups: tuple | None = None
    # with ``Settings.coarse_sdf``: the shape without its relief, in the same frame
    coarse: trimesh.Trimesh | None = None


def random_color(rng: np.random.Generator) -> tuple[float, float, float]:
    """A muted, mid-bright colour so shading and detail stay visible."""
    return colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.2, 0.55), rng.uniform(0.7, 0.9))


# ------------------------------------------------------------------------------------------
# One shape


def write_shape(
    settings: Settings,
    category: str,
    shape: str,
    mesh: trimesh.Trimesh,
    streams: dict[str, np.random.Generator],
    groups=None,
    coarse: trimesh.Trimesh | None = None,
) -> None:
    """Write every file of one shape from a closed, outward-oriented world-frame mesh; ``groups``
    = (part of each face ``[F]``, which parts are rod-like ``[P]``) for per-part materials (default:
    the mesh's connected components); ``coarse``: the shape without its relief, whose SDF at the same
    samples joins them (:func:`~d2im_tf.data.synth.mesh_sdf.with_coarse_sdf`)."""
    layout = settings.layout
    samples = mesh_sdf.sample_sdf(mesh, streams["samples"], settings.samples, source=layout.mesh_path(category, shape))
    if coarse is not None:
        samples = mesh_sdf.with_coarse_sdf(samples, coarse)
        write_obj(layout.coarse_mesh_path(category, shape), coarse)
    if settings.framing:
        rows = framed_views(streams["views"], settings.views, mesh.vertices, settings.framing)
    else:
        rows = random_views(streams["views"], settings.views)
    renderer = Renderer(mesh, random_color(streams["color"]))
    views = (renderer.render(row, settings.image_size) for row in rows)  # rendered one at a time
    if settings.appearance:
        views = _restyled(settings, renderer, rows, views, streams["appearance"], groups or mesh_groups(mesh))
    write_shape_files(layout, category, shape, mesh, samples, rows, views)


def _restyled(settings: Settings, renderer: Renderer, rows, views: Iterable[View], rng, groups) -> Iterable[View]:
    """``views`` with their RGBA replaced by renders with random materials and lights (the normal
    map, depth and mask are the plain render's), except a random ``settings.plain_share`` of them."""
    look = random_look(rng, *groups)
    for row, view in zip(rows, views):
        lighting, render_size = random_view_style(rng, settings.render_sizes)
        if settings.plain_share and rng.uniform() < settings.plain_share:  # no draw without the option
            yield view
            continue
        rgba = renderer.render_appearance(row, settings.image_size, look, lighting, settings.supersample, render_size)
        yield replace(view, rgba=rgba)


def write_shape_files(
    layout: fmt.DatasetLayout,
    category: str,
    shape: str,
    mesh: trimesh.Trimesh,
    samples: fmt.SdfSamples,
    rows: np.ndarray,
    views: Iterable[View],
) -> None:
    """The files of one shape: its mesh, its samples, and per metadata row ``rows [V, 10]`` the render,
    normal map and depth map of ``views`` (in the order of the rows)."""
    write_obj(layout.mesh_path(category, shape), mesh)
    fmt.write_samples(layout.samples_path(category, shape), samples)
    for view, image in enumerate(views):
        fmt.write_png(layout.image_path(category, shape, view), image.rgba)
        fmt.write_normal_map(layout.normal_path(category, shape, view), image.normals, image.mask)
        fmt.write_depth(layout.depth_path(category, shape, view), image.depth, image.mask)
    fmt.write_metadata(layout.metadata_path(category, shape), rows)


def write_obj(path, mesh: trimesh.Trimesh) -> None:
    """A plain OBJ (``v`` and ``f`` lines only) with :data:`MESH_DIGITS` decimals, atomically."""
    vertices = "".join(f"v {x:.{MESH_DIGITS}f} {y:.{MESH_DIGITS}f} {z:.{MESH_DIGITS}f}\n" for x, y, z in mesh.vertices)
    faces = "".join(f"f {a} {b} {c}\n" for a, b, c in mesh.faces + 1)
    with atomic_path(path) as tmp:
        tmp.write_text(vertices + faces)


def synthetic_shape(settings: Settings, category: str, streams) -> GeneratedShape:
    """A generated shape from its streams (:func:`shape_streams`): its mesh and, as the settings ask,
    its face groups and its coarse mesh (see :class:`GeneratedShape`)."""
    rng = streams["geometry"]
    if settings.families == "extended":
        parts = shapes_extra.random_parts(category, rng)
    elif settings.families == "classic":
        parts = shapes.family_parts(category, rng)
    else:
        parts = shapes_extra.named_family_parts(settings.families, category, rng)
    mesh = shapes.mesh_parts(parts, settings.resolution)
    frame = mesh.metadata["family_frame"]
    mesh = trimesh.Trimesh(np.round(mesh.vertices, MESH_DIGITS), mesh.faces, process=False)
    groups = (shapes.face_parts(parts, mesh, frame), shapes.thin_parts(parts)) if settings.appearance else None
    coarse = shapes.coarse_mesh(parts, frame, settings.resolution) if settings.coarse_sdf else None
    if settings.framing:
        offset = streams["framing"].uniform(-1.0, 1.0, 3) * FRAMING_OFFSET * shapes.WORLD_DIAGONAL
        mesh = trimesh.Trimesh(np.round(mesh.vertices + offset, MESH_DIGITS), mesh.faces, process=False)
        if coarse is not None:
            coarse = trimesh.Trimesh(np.round(coarse.vertices + offset, MESH_DIGITS), coarse.faces, process=False)
    return GeneratedShape(mesh, groups, coarse)


def _synthetic_task(task: tuple[Settings, str, int]) -> tuple[str, str, str | None]:
    settings, category, index = task
    streams = shape_streams(settings.seed, category, index)
    shape = shape_name(index)
    generated = synthetic_shape(settings, category, streams)
    write_shape(settings, category, shape, generated.mesh, streams, generated.groups, generated.coarse)
    return category, shape, None


def _coarse_sdf_task(task: tuple[Settings, str, int]) -> None:
    """Add the coarse mesh and SDF to a finished shape: the shape is generated again from its streams
    (checked against its stored mesh), ``coarse.obj`` written beside it and the samples file rewritten
    with every other field kept."""
    settings, category, index = task
    layout, shape = settings.layout, shape_name(index)
    # the face groups of --appearance are not needed here (and draw no random numbers)
    shape_only = replace(settings, appearance=False)
    generated = synthetic_shape(shape_only, category, shape_streams(settings.seed, category, index))
    mesh_path = layout.mesh_path(category, shape)
    stored = fmt.read_mesh(mesh_path, "mesh")
    if stored.vertices.shape != generated.mesh.vertices.shape or not np.allclose(
        stored.vertices, generated.mesh.vertices, atol=2 * 10.0**-MESH_DIGITS
    ):
        raise fmt.DataError(
            mesh_path, "is not the shape this version of make-data generates from its seed; regenerate the dataset"
        )
    write_obj(layout.coarse_mesh_path(category, shape), generated.coarse)
    path = layout.samples_path(category, shape)  # written last: it marks the shape done
    fmt.write_samples(path, mesh_sdf.with_coarse_sdf(fmt.read_samples(path), generated.coarse))


def _mesh_task(task: tuple[Settings, str, str, Path]) -> tuple[str, str, str | None]:
    """Convert one user mesh; returns a note (repaired / skipped) or None."""
    settings, category, shape, path = task
    try:
        mesh, repaired = mesh_sdf.make_watertight(mesh_sdf.load_mesh(path), path)
        mesh = trimesh.Trimesh(np.round(mesh.vertices, MESH_DIGITS), mesh.faces, process=False)
        streams = shape_streams(settings.seed, category, zlib.crc32(shape.encode()))
        write_shape(settings, category, shape, mesh, streams)
    except fmt.DataError as error:
        return category, shape, f"skipped {error}"
    return category, shape, f"{path}: not watertight, remeshed" if repaired else None


# ------------------------------------------------------------------------------------------
# Many shapes


def _run(function, tasks: list, workers: int, description: str) -> list:
    """``function`` over ``tasks`` in ``workers`` processes with a progress bar; results in task order."""
    results = []
    if not tasks:  # everything already done: no empty bar
        return results
    with tqdm(total=len(tasks), desc=description, unit="shape") as bar:  # closed before an error is shown
        if workers <= 1:
            for task in tasks:
                results.append(function(task))
                bar.update()
        else:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for result in pool.imap(function, tasks):
                    results.append(result)
                    bar.update()
    return results


def split_shapes(
    shapes_in_category: list[str], test_fraction: float, seed: int, category: str
) -> tuple[list[str], list[str]]:
    """A seeded train/test split; at least one test shape when there are two or more shapes."""
    rng = np.random.default_rng([seed, zlib.crc32(category.encode()), 7])
    order = rng.permutation(len(shapes_in_category))
    count = int(round(test_fraction * len(shapes_in_category)))
    if test_fraction > 0 and len(shapes_in_category) >= 2:
        count = min(max(count, 1), len(shapes_in_category) - 1)
    test = sorted(shapes_in_category[i] for i in order[:count])
    train = sorted(shapes_in_category[i] for i in order[count:])
    return train, test


def _write_splits(
    settings: Settings, done: dict[str, list[str]], test_fraction: float, train_only: dict[str, list[str]] | None = None
) -> None:
    """Split ``done[category]`` into train and test; ``train_only[category]`` joins the training list."""
    for category, names in done.items():
        train, test = split_shapes(sorted(names), test_fraction, settings.seed, category)
        train = sorted(train + list((train_only or {}).get(category, [])))
        fmt.write_split(settings.layout.split_path(category, "train"), train)
        fmt.write_split(settings.layout.split_path(category, "test"), test)


def make_synthetic(
    settings: Settings,
    categories: list[str],
    per_category: int,
    workers: int = 1,
    test_fraction: float = 0.2,
    extra_train: int = 0,
) -> None:
    """Generate ``per_category`` procedural shapes of each category, split into train and test, and
    ``extra_train`` more (the indices after them) for the training split only. Shapes already
    finished in the folder (their metadata file, written last and atomically, exists) are not written
    again: a killed run continues, and a finished dataset that grows writes only its new shapes."""
    unknown = [c for c in categories if c not in shapes.FAMILIES]  # every category has classic families
    if unknown:
        known = ", ".join(f"{k} ({v})" for k, v in CATEGORY_NAMES.items())
        raise UserError(f"no procedural family for {', '.join(unknown)}; known: {known}")
    if settings.families not in ("classic", "extended"):
        for category in categories:  # a named family: every category must have it, before anything is written
            shapes_extra.require_family(settings.families, category)
    total = per_category + extra_train
    tasks = [
        (settings, c, i)
        for c in categories
        for i in range(total)
        if not settings.layout.metadata_path(c, shape_name(i)).exists()
    ]
    _run(_synthetic_task, tasks, workers, "make-data")
    if settings.coarse_sdf:  # shapes written before the option was added get their coarse mesh and SDF now
        lacking = [
            (settings, c, i)
            for c in categories
            for i in range(total)
            if not fmt.has_coarse_sdf(settings.layout.samples_path(c, shape_name(i)))
            or not settings.layout.coarse_mesh_path(c, shape_name(i)).is_file()
        ]
        if lacking:
            _run(_coarse_sdf_task, lacking, workers, "coarse SDF")
    split = {c: [shape_name(i) for i in range(per_category)] for c in categories}
    extra = {c: [shape_name(i) for i in range(per_category, total)] for c in categories}
    _write_splits(settings, split, test_fraction, extra)


def find_meshes(source: Path) -> list[tuple[str, str, Path]]:
    """``(category, shape, path)`` of ``<cat>/<shape>/model.obj`` (ShapeNet v1),
    ``<cat>/<shape>/models/model_normalized.obj`` (v2) or ``<cat>/<shape>.obj|.ply|.off|.stl``."""
    found = {}
    for pattern in ("*/*/models/model_normalized.obj", "*/*/model.obj", "*/*.obj", "*/*.ply", "*/*.off", "*/*.stl"):
        for path in sorted(Path(source).glob(pattern)):
            relative = path.relative_to(source).parts
            shape = relative[1] if len(relative) > 2 else path.stem
            found.setdefault((relative[0], shape), path)
    return [(c, s, p) for (c, s), p in sorted(found.items())]


def make_from_meshes(settings: Settings, source: Path, workers: int = 1, test_fraction: float = 0.2) -> list[str]:
    """Convert every mesh under ``source`` (see :func:`find_meshes`); returns notes to print."""
    meshes = find_meshes(source)
    if not meshes:
        raise UserError(f"{source}: no meshes found (expected <category>/<shape>/model.obj)")
    tasks = [(settings, c, s, p) for c, s, p in meshes]
    results = _run(_mesh_task, tasks, workers, "make-data")
    done: dict[str, list[str]] = {}
    notes = []
    for category, shape, note in results:
        if note:
            notes.append(note)
        if not (note and note.startswith("skipped")):
            done.setdefault(category, []).append(shape)
    _write_splits(settings, done, test_fraction)
    return notes
