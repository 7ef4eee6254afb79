"""Reading and writing DISN's on-disk layout (docs/conventions.md, "Data layout").

Real DISN/D²IM-Net ShapeNet downloads and the project's own synthetic data share this layout::

    <root>/splits/<cat>_train.lst, <cat>_test.lst        one shape id per line
    <root>/image/<cat>_easy/<shape>/NN.png               RGB(A) renders, NN = 00..35
    <root>/image/<cat>_easy/<shape>/rendering_metadata.txt
    <root>/normal_processed/<cat>_easy/<shape>/NN_mnormal.png
    <root>/SDF_v1/<cat>/<shape>/ori_sample.h5
    <root>/depth/<cat>_easy/<shape>/NN_depth.png          (ours) depth × 10⁴ as 16-bit, 0 = background
    <root>/meshes/<cat>/<shape>/model.obj                 (ours) ground-truth mesh, world frame

Every reader raises :class:`DataError` whose message is one line naming the file and the problem;
every writer writes a temporary file beside the target and renames it (:func:`d2im_tf.io.atomic_path`), so a
killed process never leaves a half-written file.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from d2im_tf.errors import UserError
from d2im_tf.io import atomic_path

METADATA_FIELDS = 10  # az, el, 0, dist_ratio, 35, 32, 1.75, sx, sy, sz
DEPTH_SCALE = 10000.0  # depth PNGs store round(depth · 10⁴) as uint16


class DataError(UserError):
    """A dataset file that is missing, unreadable or inconsistent. ``str()`` is one line."""

    def __init__(self, path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# ------------------------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of every file of a DISN-layout dataset rooted at ``root``."""

    root: Path
    split_dir: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        split_dir = Path(self.split_dir) if self.split_dir else self.root / "splits"
        object.__setattr__(self, "split_dir", split_dir)

    @classmethod
    def from_config(cls, config) -> "DatasetLayout":
        """The dataset a :class:`~d2im_tf.config.Config` trains on: ``data.root`` and ``data.split_dir``."""
        return cls(config.data.root, config.data.split_dir or None)

    @classmethod
    def all_from_config(cls, config) -> list[tuple["DatasetLayout", list[str]]]:
        """Every dataset a config trains on, with the categories read from it: ``data.root`` with all of
        ``data.categories``, then each of ``data.extra_roots`` with those of them it has split lists for
        (a set of tables alone adds tables); an extra root with none of them is a :class:`DataError`."""
        wanted = list(config.data.categories)
        sets = [(cls.from_config(config), wanted)]
        for root in config.data.extra_roots:
            layout = cls(root)
            present = set(layout.categories())  # one listing of the split folder
            held = [category for category in wanted if category in present]
            if not held:
                raise DataError(layout.split_dir, f"no split lists of {', '.join(wanted)} (data.extra_roots)")
            sets.append((layout, held))
        return sets

    def split_path(self, category: str, split: str) -> Path:
        return self.split_dir / f"{category}_{split}.lst"

    def image_dir(self, category: str, shape: str) -> Path:
        return self.root / "image" / f"{category}_easy" / shape

    def image_path(self, category: str, shape: str, view: int) -> Path:
        return self.image_dir(category, shape) / f"{view:02d}.png"

    def metadata_path(self, category: str, shape: str) -> Path:
        return self.image_dir(category, shape) / "rendering_metadata.txt"

    def normal_path(self, category: str, shape: str, view: int) -> Path:
        return self.root / "normal_processed" / f"{category}_easy" / shape / f"{view:02d}_mnormal.png"

    def depth_path(self, category: str, shape: str, view: int) -> Path:
        return self.root / "depth" / f"{category}_easy" / shape / f"{view:02d}_depth.png"

    def samples_path(self, category: str, shape: str) -> Path:
        return self.root / "SDF_v1" / category / shape / "ori_sample.h5"

    def mesh_path(self, category: str, shape: str) -> Path:
        return self.root / "meshes" / category / shape / "model.obj"

    def coarse_mesh_path(self, category: str, shape: str) -> Path:
        """The shape without its relief (ours, ``make-data --coarse-sdf``)."""
        return self.root / "meshes" / category / shape / "coarse.obj"

    def categories(self) -> list[str]:
        """Categories with at least one split list, sorted."""
        if not self.split_dir.is_dir():
            return []
        names = {p.name.rsplit("_", 1)[0] for p in self.split_dir.glob("*_*.lst")}
        return sorted(names)


def _write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _read_text(path) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(path, f"unreadable ({error.__class__.__name__}: {error})") from None


# ------------------------------------------------------------------------------------------
# Split lists


def read_split(path) -> list[str]:
    """Shape ids of a ``.lst`` file, one per non-empty line."""
    return [line.strip() for line in _read_text(path).splitlines() if line.strip()]


def write_split(path, shapes) -> None:
    _write_text(path, "".join(f"{s}\n" for s in shapes))


# ------------------------------------------------------------------------------------------
# Camera metadata


# Distance ratios (field 4) that give a usable projection: nearer, the camera (at 1.75·d) is inside the
# sphere of radius 0.5 that holds a ShapeNet-normalised shape (its box's diagonal is 1); farther, the shape
# spans under two pixels of a 224-pixel view.
MIN_DISTANCE_RATIO, MAX_DISTANCE_RATIO = 0.5 / 1.75, 100.0
MAX_ANGLE_DEGREES = 1e6  # azimuth and elevation (fields 1, 2); larger ones have lost their precision


def metadata_row_problem(row) -> str | None:
    """What is wrong with a metadata row as a camera (``None`` if nothing): ten finite numbers with a
    distance ratio (field 4; the camera sits at ``1.75·d`` from the origin, looking at it) that makes the
    projection finite and not degenerate (:data:`MIN_DISTANCE_RATIO`, :data:`MAX_DISTANCE_RATIO`)."""
    row = np.asarray(row, dtype=np.float64)
    if row.shape != (METADATA_FIELDS,):
        return f"has {row.size} fields, expected {METADATA_FIELDS}"
    if not np.all(np.isfinite(row)):
        return "has a non-finite value"
    if row[3] <= 0:
        return f"has distance ratio {row[3]:g} (field 4); it must be positive"
    if not MIN_DISTANCE_RATIO <= row[3] <= MAX_DISTANCE_RATIO:
        return (
            f"has distance ratio {row[3]:g} (field 4); it must be between {MIN_DISTANCE_RATIO:.3f} (nearer, the "
            f"camera is inside the shape's bounding sphere) and {MAX_DISTANCE_RATIO:g} (farther, the shape is "
            "under 2 pixels)"
        )
    if np.abs(row[:2]).max() > MAX_ANGLE_DEGREES:
        return f"has an angle beyond ±{MAX_ANGLE_DEGREES:g} degrees (fields 1, 2)"
    return None


class MetadataLineError(ValueError):
    """A metadata line that is not a camera; ``str()`` completes "the line …", ``numbers`` tells
    whether its fields were at least numbers."""

    def __init__(self, problem: str, numbers: bool):
        super().__init__(problem)
        self.numbers = numbers


def parse_metadata_line(text: str) -> np.ndarray | None:
    """One ``rendering_metadata.txt`` line → float64 ``[10]``; ``None`` for a blank line.

    Lines look like ``[30.0, 20.0, 0, 0.8, 35, 32, 1.75, 0, 0, 0]`` (brackets and commas optional).
    Raises :class:`MetadataLineError` if a field is not a number or the row is no camera
    (:func:`metadata_row_problem`).
    """
    fields = text.strip().strip("[]").replace(",", " ").split()
    if not fields:
        return None
    try:
        row = np.array([float(field) for field in fields], dtype=np.float64)
    except ValueError:
        raise MetadataLineError("has a field that is not a number", numbers=False) from None
    problem = metadata_row_problem(row)
    if problem:
        raise MetadataLineError(problem, numbers=True)
    return row


def read_metadata(path) -> np.ndarray:
    """``rendering_metadata.txt`` → float64 array ``[views, 10]``, one :func:`parse_metadata_line` a line."""
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        try:
            row = parse_metadata_line(line)
        except MetadataLineError as error:
            detail = "" if error.numbers else f": {line.strip()!r}"
            raise DataError(path, f"line {number} {error}{detail}") from None
        if row is not None:
            rows.append(row)
    if not rows:
        raise DataError(path, "no camera lines")
    return np.asarray(rows, dtype=np.float64)


def format_metadata_line(row) -> str:
    """One metadata row as DISN writes it: ``[az, el, 0, d, 35, 32, 1.75, sx, sy, sz]``."""
    return "[" + ", ".join(repr(float(v)) for v in row) + "]"


def write_metadata(path, rows) -> None:
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != METADATA_FIELDS:
        raise ValueError(f"{path}: metadata rows must be [views, {METADATA_FIELDS}], got {rows.shape}")
    _write_text(path, "".join(format_metadata_line(r) + "\n" for r in rows))


# ------------------------------------------------------------------------------------------
# Images


def open_image(path) -> Image.Image:
    """A fully decoded PIL image; :class:`DataError` if missing, truncated, corrupt or a decompression
    bomb (more pixels than Pillow's ``MAX_IMAGE_PIXELS``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            try:
                image.load()
            except BaseException:
                image.close()
                raise
        return image
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not an image") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        size = image_pixels(path)
        counted = re.search(r"\((\d+) pixels\)", str(error))  # past twice the limit Pillow refuses to open it
        if size == "?" and counted:
            size = f"{int(counted[1]):,}"
        raise DataError(path, f"image too large ({size} pixels; the limit is {Image.MAX_IMAGE_PIXELS})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(path, f"not a readable image ({error})") from None


def image_pixels(path) -> str:
    """``"W×H"`` from an image's header (for messages), or ``"?"``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return f"{image.width}×{image.height}"
    except Exception:  # a header too broken to tell
        return "?"


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale (modes ``I;16*``, ``I``, ``F``) scaled to 8 bits; Pillow's own
    ``convert`` clips them at 255, which turns a 16-bit image white."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 1.0
    return Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8), mode="L")


def read_image(path) -> np.ndarray:
    """An RGB(A) or grey image (8 or 16 bits) as uint8 ``[H, W, 3]`` RGB or ``[H, W, 4]`` RGBA (alpha kept)."""
    image = open_image(path)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = to_8bit(image)
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    return np.asarray(image)


def on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGBA ``[H, W, 4]`` composited on a white background → float64 RGB ``[H, W, 3]`` in [0, 255].

    The renders' background is transparent white; this is how every NumPy reader shows them (the
    training pipeline does the same in the graph, :func:`d2im_tf.data.pipeline.decode_image`).
    """
    alpha = rgba[..., 3:].astype(np.float64) / 255.0  # [H, W, 1]
    return rgba[..., :3].astype(np.float64) * alpha + 255.0 * (1.0 - alpha)


def write_png(path, array: np.ndarray) -> None:
    """Write a uint8 (grey, RGB, RGBA) or uint16 (grey) array as PNG, atomically."""
    array = np.asarray(array)
    if array.dtype == np.uint16:
        image = Image.fromarray(array)  # 16-bit greyscale
    elif array.dtype == np.uint8:
        image = Image.fromarray(array)
    else:
        raise ValueError(f"{path}: PNG arrays must be uint8 or uint16, got {array.dtype}")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def encode_normals(normals: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Unit normals ``[H, W, 3]`` → uint8 ``(n·0.5 + 0.5)·255`` (R = n_x, G = n_y, B = n_z).

    Pixels outside ``mask`` are written as 0 (black), as in the reference's renders.
    """
    encoded = np.clip(np.round((np.asarray(normals) * 0.5 + 0.5) * 255.0), 0, 255).astype(np.uint8)
    if mask is not None:
        encoded[~mask] = 0
    return encoded


def decode_normals(encoded: np.ndarray) -> np.ndarray:
    """uint8 ``_mnormal`` pixels → float32 unit normals ``[H, W, 3]``; black background → zeros."""
    encoded = np.asarray(encoded)[..., :3]
    normals = encoded.astype(np.float32) / 255.0 * 2.0 - 1.0
    background = np.all(encoded == 0, axis=-1)
    length = np.linalg.norm(normals, axis=-1, keepdims=True)
    normals = np.where(length > 0, normals / np.maximum(length, 1e-12), 0.0)
    normals[background] = 0.0
    return normals.astype(np.float32)


def read_normal_map(path) -> np.ndarray:
    """An ``_mnormal.png`` → float32 camera-space unit normals ``[H, W, 3]`` (zeros on background)."""
    return decode_normals(read_image(path))


def write_normal_map(path, normals: np.ndarray, mask: np.ndarray | None = None) -> None:
    write_png(path, encode_normals(normals, mask))


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] to linear RGB (the IEC 61966-2-1 transfer function)."""
    srgb = np.asarray(srgb, dtype=np.float64)
    return np.where(srgb > 0.04045, ((srgb + 0.055) / 1.055) ** 2.4, srgb / 12.92)


def mnormal_from_blender(raw: np.ndarray) -> np.ndarray:
    """A raw sRGB-encoded Blender normal render (uint8 RGB/RGBA) → the ``_mnormal`` uint8 image.

    As the reference's preprocessing: sRGB → linear, minus 0.5, renormalised to unit length, then
    encoded with :func:`encode_normals`. Pixels that are black (or transparent) stay background.
    """
    raw = np.asarray(raw)
    background = np.all(raw[..., :3] == 0, axis=-1)
    if raw.shape[-1] == 4:
        background |= raw[..., 3] == 0
    vectors = srgb_to_linear(raw[..., :3] / 255.0) - 0.5
    length = np.linalg.norm(vectors, axis=-1, keepdims=True)
    normals = vectors / np.maximum(length, 1e-12)
    return encode_normals(normals, ~background & (length[..., 0] > 0))


def write_depth(path, depth: np.ndarray, mask: np.ndarray) -> None:
    scaled = np.where(mask, np.round(np.asarray(depth, dtype=np.float64) * DEPTH_SCALE), 0)
    if scaled.max(initial=0) >= 2**16:
        raise ValueError(f"{path}: depth {scaled.max() / DEPTH_SCALE:.3f} exceeds the 16-bit range")
    write_png(path, scaled.astype(np.uint16))


# ------------------------------------------------------------------------------------------
# Meshes


def read_mesh(path, what: str = "mesh"):
    """A mesh file (OBJ, PLY, OFF, STL, …) as one ``trimesh.Trimesh``; :class:`DataError` naming the
    file if it is missing, unreadable or has no triangles. ``what`` names the mesh in the messages
    (``"ground-truth mesh"``, …)."""
    import trimesh  # here, so that reading the rest of the layout does not load trimesh

    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"{what} not found")
    try:
        mesh = trimesh.load(path, force="mesh", process=False, skip_materials=True)
    except Exception as error:  # trimesh raises many types for malformed files
        raise DataError(path, f"not a readable mesh ({error.__class__.__name__}: {error})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise DataError(path, f"{what} has no triangles")
    return mesh


# ------------------------------------------------------------------------------------------
# SDF samples


@dataclass
class SdfSamples:
    """The content of one ``ori_sample.h5``; all coordinates in the normalised frame."""

    samples: np.ndarray  # [32768, 4] float32: x, y, z, sdf (unscaled)
    norm_params: np.ndarray  # [4]: cx, cy, cz, m — world = xyz · m + c
    surface_points: np.ndarray | None = None  # pc_sdf_original [S, 3]
    sdf_params: np.ndarray | None = None  # bounds of the SDF grid
    gradients: np.ndarray | None = None  # pc_gradients [32768, 3], unit SDF gradient
    density: np.ndarray | None = None  # [32768], 1 / same-sign neighbours within 0.025
    far_samples: np.ndarray | None = None  # pc_sdf_uniform [K, 4] (ours): x, y, z, sdf, uniform in [-1, 1]³
    far_gradients: np.ndarray | None = None  # pc_gradients_uniform [K, 3] (ours): unit SDF gradients there
    # (ours, make-data --coarse-sdf) the SDF of the shape without its relief at the same points:
    coarse_sdf: np.ndarray | None = None  # pc_sdf_coarse [32768], at the samples' points
    far_coarse_sdf: np.ndarray | None = None  # pc_sdf_uniform_coarse [K], at the far samples' points

    @property
    def points(self) -> np.ndarray:
        return self.samples[:, :3]

    @property
    def sdf(self) -> np.ndarray:
        return self.samples[:, 3]


_H5_FIELDS = {
    "samples": "pc_sdf_sample",
    "norm_params": "norm_params",
    "surface_points": "pc_sdf_original",
    "sdf_params": "sdf_params",
    "gradients": "pc_gradients",
    "density": "density",
    "far_samples": "pc_sdf_uniform",
    "far_gradients": "pc_gradients_uniform",
    "coarse_sdf": "pc_sdf_coarse",
    "far_coarse_sdf": "pc_sdf_uniform_coarse",
}


def _check_finite(path, name: str, array: np.ndarray) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise DataError(path, f"dataset '{name}' has {bad} NaN/Inf values")


def read_samples(path) -> SdfSamples:
    """Read an ``ori_sample.h5``; ``pc_sdf_sample`` and ``norm_params`` are required."""
    values = {}
    try:
        with h5py.File(path, "r") as h5:
            for attr, name in _H5_FIELDS.items():
                if name in h5:
                    values[attr] = np.asarray(h5[name][()])
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, KeyError, ValueError) as error:
        raise DataError(path, f"not a readable HDF5 file ({error})") from None
    for required in ("samples", "norm_params"):
        if required not in values:
            raise DataError(path, f"missing dataset '{_H5_FIELDS[required]}'")
    samples = values["samples"]
    if samples.ndim != 2 or samples.shape[1] != 4:
        raise DataError(path, f"dataset 'pc_sdf_sample' has shape {samples.shape}, expected [N, 4]")
    far = values.get("far_samples")
    if far is not None and (far.ndim != 2 or far.shape[1] != 4):
        raise DataError(path, f"dataset 'pc_sdf_uniform' has shape {far.shape}, expected [K, 4]")
    far_gradients = values.get("far_gradients")
    if far_gradients is not None and (far is None or far_gradients.shape != (len(far), 3)):
        expected = f"({len(far)}, 3)" if far is not None else "pc_sdf_uniform beside it"
        raise DataError(path, f"dataset 'pc_gradients_uniform' has shape {far_gradients.shape}, expected {expected}")
    if values["norm_params"].shape != (4,):
        raise DataError(path, f"dataset 'norm_params' has shape {values['norm_params'].shape}, expected (4,)")
    count = samples.shape[0]
    far_count = len(far) if far is not None else 0
    for attr, expected in (
        ("gradients", (count, 3)),
        ("density", (count,)),
        ("coarse_sdf", (count,)),
        ("far_coarse_sdf", (far_count,)),
    ):
        if attr in values:
            if values[attr].shape != expected:
                raise DataError(
                    path, f"dataset '{_H5_FIELDS[attr]}' has shape {values[attr].shape}, expected {expected}"
                )
    for attr, array in values.items():
        if not np.issubdtype(array.dtype, np.floating):  # an int SDF would train on rounded distances
            raise DataError(path, f"dataset '{_H5_FIELDS[attr]}' has dtype {array.dtype}, expected floating point")
        _check_finite(path, _H5_FIELDS[attr], array)
    if values["norm_params"][3] <= 0:
        raise DataError(path, f"dataset 'norm_params' has scale m = {values['norm_params'][3]:g}; it must be positive")
    return SdfSamples(**values)


def has_coarse_sdf(path) -> bool:
    """Whether an ``ori_sample.h5`` holds ``pc_sdf_coarse`` (False when the file is missing)."""
    try:
        with h5py.File(path, "r") as h5:
            return "pc_sdf_coarse" in h5
    except FileNotFoundError:
        return False
    except OSError as error:
        raise DataError(path, f"not a readable HDF5 file ({error})") from None


def read_norm_params(path) -> np.ndarray:
    """Only the ``norm_params`` (cx, cy, cz, m) of an ``ori_sample.h5``, without reading the samples."""
    try:
        with h5py.File(path, "r") as h5:
            params = np.asarray(h5["norm_params"][()], dtype=np.float64)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except KeyError:
        raise DataError(path, "missing dataset 'norm_params'") from None
    except (OSError, ValueError) as error:
        raise DataError(path, f"not a readable HDF5 file ({error})") from None
    if params.shape != (4,) or not np.all(np.isfinite(params)) or params[3] <= 0:
        raise DataError(path, f"dataset 'norm_params' must be 4 finite numbers with m > 0, got {params}")
    return params


def write_samples(path, samples: SdfSamples) -> None:
    """Write every non-None field of ``samples`` to an ``ori_sample.h5``, atomically."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            for attr, name in _H5_FIELDS.items():
                array = getattr(samples, attr)
                if array is not None:
                    h5.create_dataset(name, data=np.asarray(array))
