"""Mesh extraction from a signed distance function: dense and coarse-to-fine grids, marching cubes.

The grid is the ``R³`` cell centres of the box ``[lo, hi]³``, as the reference's test grid (``R = 128``;
its box is the world frame's [-0.5, 0.5]³, ours the normalised frame's [-1, 1]³,
:data:`d2im_tf.geometry.frames.NORMALISED_BOX`, the default here); marching cubes runs at level 0 on
those samples as grid nodes.
The SDF convention is negative inside, positive outside; any scale (the model's ×10 units) is the
caller's business, through ``lipschitz``.

Coarse-to-fine mode (the idea of Occupancy Networks' MISE, applied to an SDF) produces the same grid
as dense mode wherever it matters while evaluating only a band around the surface:

* The nodes form a lattice with spacing ``h = (hi - lo) / R``; node ``i`` sits at ``lo + h/2 + i·h``.
  The lattice has ``R + 1`` nodes per axis, the last one half a cell beyond ``hi``, so that it can be
  split into cells of stride ``s = R / initial_resolution`` (a power of two); only nodes ``0..R-1``
  go to marching cubes.
* All nodes of stride ``s`` are evaluated. A cell of stride ``s`` (side ``s·h``) is *certified* when
  its corners share a sign and their zero-free balls cover it: some corner ``c`` has a *clearance*
  (a radius around ``c`` known to hold no zero of ``f``) larger than the cell's diagonal, or every
  corner one larger than half of it (no point of a cube is further than that from its nearest corner).
  By default the clearance is ``|f(c)| / lipschitz``, exact for an ``f`` with Lipschitz constant
  ``lipschitz`` (1 for a true SDF); a field that knows better (D²IM-Net's fused field,
  :func:`displaced_field_clearance`) returns its own as ``sdf_fn(points) -> (values, clearance)``.
  Every other cell is *active*: the nodes of stride ``s/2`` inside it are evaluated and its eight
  children are tested at the next level — except a new node that lies inside the zero-free ball of
  a corner of the cell, face or edge it halves: it takes that corner's sign without an evaluation
  (*inferred*), with the rest of the corner's clearance as its own, and counts as a sign-only sample.
* When stride 1 is reached, every node inside a certified cell is filled by trilinear interpolation
  of the cell's corners, level by level; the fill has the cell's sign, so the sign grid equals the
  dense one, and every lattice edge that crosses the surface lies in cells that were never certified,
  so both its end values are exact: marching cubes returns the dense mesh.

*Sign-only samples.* Marching cubes reads a node's value only at the cells the surface passes through
(corners of differing signs); elsewhere only its sign counts (certification, the fill). A field that
can bound its value more cheaply than compute it returns ``(values, clearance, exact)``: where
``exact`` is False the value only has the right sign, and once the grid is complete those among the
corners of cells the surface passes through are recomputed with ``refine(points) -> values``. The grid
then differs from the exact one only at nodes whose values marching cubes never reads: same mesh.
Inferred nodes are refined the same way (by ``sdf_fn`` itself when its values are exact).

*Enclosed cavities.* With ``fill_cavities`` the outside nodes (f ≥ 0) that no path of outside nodes
(26-connected) joins to the grid's border are made inside before marching cubes, so a closed pocket
inside a solid leaves no inner surface. The training targets never hold one (a watertight mesh's SDF;
DISN's flood-filled signs), but a network unsure of an object's interior can predict one: the
bundled model leaves such bubbles inside cabinets (docs/training.md). Filling them works on the sign
grid, which coarse-to-fine shares with the dense grid, so both still give the same mesh.

*Gap bridging.* With ``bridging`` the parts the field leaves apart by a hair are joined before the
cavities are filled (:mod:`d2im_tf.inference.bridging`); the values it reads are made exact first,
so coarse-to-fine still gives the dense grid's mesh.

A learned SDF is only approximately 1-Lipschitz: pass a ``lipschitz`` above its true bound (e.g. 2
for a network trained on ``sdf``, 20 for one trained on ``10·sdf``) to widen the band; too small a
value can miss thin parts that the dense grid would find.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import trimesh
from scipy import ndimage
from skimage import measure

from d2im_tf.config import BATCH_POINTS
from d2im_tf.geometry.frames import NORMALISED_BOX
from d2im_tf.inference.bridging import GapBridging, SettleFunction, bridge_gaps

# points [N, 3] float32 -> sdf [N], or (sdf [N], clearance [N]), or (sdf [N], clearance [N], exact [N] bool)
# (module docstring)
SdfFunction = Callable[[np.ndarray], "np.ndarray | tuple[np.ndarray, ...]"]
# points [N, 3] float32 -> exact sdf [N], for the sign-only samples at cells the surface passes through
RefineFunction = Callable[[np.ndarray], np.ndarray]

MODES = ("coarse_to_fine", "dense")
INITIAL_RESOLUTION = 32  # cells per axis of coarse-to-fine's first level
# A bound of the fused field closer to 0 than this (model units) does not settle the sign: the exact
# value, computed in a batch of another size, may round to the other side.
SIGN_MARGIN = 1e-3


@dataclass
class ExtractionStats:
    """What an extraction cost: SDF evaluations; ``refinements``, the points evaluated again exactly
    after a cheaper bound (:func:`extract_fused_mesh` with ``decode_bounds``: those whose sign the
    bound left open, and the sign-only samples marching cubes reads); wall time per stage (seconds,
    in order)."""

    resolution: int
    evaluations: int = 0
    refinements: int = 0
    inferred: int = 0  # coarse-to-fine nodes whose sign a neighbour's zero-free ball settled (not evaluated)
    cavity_nodes: int = 0  # outside nodes of enclosed cavities made inside (``fill_cavities``)
    bridges: int = 0  # gaps bridged (``bridging``)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def dense_evaluations(self) -> int:
        return self.resolution**3

    @property
    def evaluation_ratio(self) -> float:
        """Evaluations relative to a dense grid of the same resolution."""
        return self.evaluations / self.dense_evaluations


def levels_fit(resolution: int, initial_resolution: int) -> bool:
    """Whether coarse-to-fine can go from ``initial_resolution`` to ``resolution`` by halving the
    stride: ``resolution / initial_resolution`` is a whole power of two."""
    ratio = resolution // initial_resolution
    return resolution % initial_resolution == 0 and ratio & (ratio - 1) == 0


def grid_spacing(resolution: int, bounds=NORMALISED_BOX) -> float:
    """Distance between neighbouring cell centres of ``resolution`` cells across ``bounds``."""
    low, high = bounds
    return (high - low) / resolution


def displaced_field_clearance(fused, base, displacement_range, base_lipschitz: float, radius=np.inf) -> np.ndarray:
    """Clearance ``[N]`` of D²IM-Net's fused field ``f = f_B + d`` at points with values ``fused``, ``base``.

    ``f`` is not Lipschitz — ``d`` jumps where the front/back split switches maps — but ``f_B`` is
    (``base_lipschitz``) and ``d`` stays in ``displacement_range = (low, high)`` (numbers, or ``[N]``
    arrays holding within ``radius`` of each point, :class:`LocalDisplacementRange`). Within distance
    ``r`` of a point ``c`` with ``f(c) > 0``, ``f ≥ f_B(c) − L·r + low``, positive while
    ``r < (f_B(c) + low) / L``; with ``f(c) < 0``, ``f ≤ f_B(c) + L·r + high``, negative while
    ``r < −(f_B(c) + high) / L``; and ``r`` at most ``radius`` (a number or ``[N]``). Using the
    sign-matching end of the range (not ``max |d|``) keeps the large positive displacement a trained
    model predicts on the background from blocking every cell.
    """
    low, high = displacement_range
    fused = np.asarray(fused, np.float32)
    base = np.asarray(base, np.float32)
    outside = np.maximum(base + low, 0.0) / base_lipschitz
    inside = np.maximum(-(base + high), 0.0) / base_lipschitz
    clearance = np.where(fused > 0, outside, np.where(fused < 0, inside, 0.0))
    return np.minimum(clearance, radius).astype(np.float32)


def displacement_range(maps: np.ndarray) -> tuple[float, float]:
    """``(low, high)``: every displacement the maps ``[S, S, 2]`` can give, anywhere in the image.

    The fusion reads the maps with the interpolating cubic B-spline, whose value is a convex
    combination (weights ≥ 0, summing to 1) of its coefficients, so it stays within their range
    (exceeding the pixel values' range where the spline overshoots). The reference mode's bilinear
    reading stays within the pixel values, which the coefficients' range contains (the spline passes
    through them)."""
    coefficients = _bspline_coefficients(maps)
    return float(coefficients.min()), float(coefficients.max())


def _bspline_coefficients(maps: np.ndarray) -> np.ndarray:
    """The B-spline coefficients ``[S, S, 2]`` of the maps ``[S, S, 2]`` (the fusion's own prefilter)."""
    from d2im_tf.geometry.interpolation import bspline_coefficients  # TensorFlow, only when maps are read

    return bspline_coefficients(np.asarray(maps, np.float32)[None]).numpy()[0]


class LocalDisplacementRange:
    """The displacements the maps can give within a cube around each point, ``(low [N], high [N])`` =
    ``range(points [N, 3], radius [N])`` for the cubes ``points + [-radius, radius]³``.

    A point ``x`` reads the maps at its projection; with ``t = clip(u - ½, 0, S - 1)`` per image axis
    (:mod:`d2im_tf.geometry.interpolation`), the B-spline combines the coefficients of taps
    ``⌊t⌋ - 1 … ⌊t⌋ + 2`` (mirrored into the image at its border, onto taps the window below already
    holds), the bilinear reading the pixels ``⌊t⌋, ⌊t⌋ + 1``, each a combination of coefficients
    ``⌊t⌋ - 1 … ⌊t⌋ + 2``. For the cube ``c + [-r, r]³`` and a projection with rows ``m_u, m_v, m_w``
    (``u = m_u·x̃ / m_w·x̃``), a step δ (``|δ|∞ ≤ r``) changes ``a = m_u·x̃`` by at most ``r·‖m_u[:3]‖₁``
    and the depth ``w`` by at most ``r·‖m_w[:3]‖₁``, so while the depth stays positive
    ``|u(c + δ) − u(c)| ≤ r·(w·‖m_u‖₁ + |a|·‖m_w‖₁) / (w·(w − r·‖m_w‖₁))``. Every point of the cube
    (and of the ball of radius ``r`` inside it) then reads coefficients within that reach of ``c``'s
    own tap, plus the B-spline's taps and one for rounding: the range of the coefficients there bounds
    its displacement, usually far tighter than the image's :func:`displacement_range`, which the
    background's large values widen. The windows are squares of taps centred on ``c``'s tap, looked
    up in minimum and maximum filters computed once per half-width; a point whose window is wider
    than ``max_half_width``, or whose cube may reach behind the camera, gets the image's range.

    ``prefilter`` False bounds images read bilinearly rather than by the B-spline (the values themselves
    are the coefficients; any channel count): :mod:`d2im_tf.inference.silhouette_completion`'s lowering.
    """

    def __init__(self, maps: np.ndarray, projection: np.ndarray, max_half_width: int = 16, prefilter: bool = True):
        coefficients = _bspline_coefficients(maps) if prefilter else np.asarray(maps, np.float32)  # [S, S, C]
        self.limit = np.array(coefficients.shape[1::-1], np.float64) - 1.0  # largest t: (columns - 1, rows - 1)
        self.projection = np.asarray(projection, np.float64).reshape(3, 4)
        self.row_norms = np.abs(self.projection[:, :3]).sum(axis=1)  # [3]: ‖m_u‖₁, ‖m_v‖₁, ‖m_w‖₁
        lowest, highest = coefficients.min(axis=-1), coefficients.max(axis=-1)  # [S, S] each
        self.global_range = float(lowest.min()), float(highest.max())
        widths = range(max_half_width + 1)  # filter half-widths k: windows of (2k + 1)² taps
        self.low = np.stack([ndimage.minimum_filter(lowest, 2 * k + 1, mode="nearest") for k in widths])
        self.high = np.stack([ndimage.maximum_filter(highest, 2 * k + 1, mode="nearest") for k in widths])

    def __call__(self, points: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # [N, 3]: geometry.camera.homogeneous_pixels, written out so that this module needs no TensorFlow
        homogeneous = np.asarray(points, np.float64) @ self.projection[:, :3].T + self.projection[:, 3]
        spread = np.asarray(radius, np.float64).reshape(-1, 1) * self.row_norms  # [N, 3]: most a, b, w change
        depth = homogeneous[:, 2:]  # [N, 1]
        nearest = depth - spread[:, 2:]  # the least depth in the cube
        visible = nearest[:, 0] > 0
        depth, nearest = np.where(visible[:, None], depth, 1.0), np.where(visible[:, None], nearest, 1.0)
        uv = homogeneous[:, :2] / depth  # [N, 2]
        reach_uv = (depth * spread[:, :2] + np.abs(homogeneous[:, :2]) * spread[:, 2:]) / (depth * nearest)
        tap = np.floor(np.clip(uv - 0.5, 0.0, self.limit))  # [N, 2] (x, y)
        first = np.floor(np.clip(uv - reach_uv - 0.5, 0.0, self.limit)) - 2  # the B-spline's tap -1, and rounding
        last = np.floor(np.clip(uv + reach_uv - 0.5, 0.0, self.limit)) + 3  # its tap +2, and rounding
        half_width = np.maximum(tap - first, last - tap).max(axis=1)  # [N]
        local = visible & (half_width < len(self.low))
        half_width = np.where(local, half_width, 0).astype(np.int64)
        column, row = tap[:, 0].astype(np.int64), tap[:, 1].astype(np.int64)
        low = np.where(local, self.low[half_width, row, column], self.global_range[0])
        high = np.where(local, self.high[half_width, row, column], self.global_range[1])
        return low.astype(np.float32), high.astype(np.float32)


def lattice_indices(points: np.ndarray, bounds, spacing: float) -> np.ndarray:
    """Integer indices ``[N, 3]`` of grid points ``[N, 3]`` (cell centres ``spacing`` apart in ``bounds³``,
    as :func:`sdf_grid_points` places them): the inverse of ``low + spacing·(i + ½)``."""
    return np.rint((np.asarray(points) - bounds[0]) / spacing - 0.5).astype(np.int64)


def grid_memory_bytes(resolution: int, mode: str) -> int:
    """A lower bound of the memory an extraction at ``resolution`` needs: in ``"dense"`` mode the
    lattice's coordinates in float64 twice (:func:`sdf_grid_points`: the three meshgrid arrays, then
    their stack), 48 bytes a node; coarse-to-fine keeps the float32 values and a mask, 5 bytes a node."""
    return resolution**3 * (48 if mode == "dense" else 5)


def sdf_grid_points(resolution: int, bounds=NORMALISED_BOX) -> np.ndarray:
    """The ``resolution³`` cell centres of the cube ``bounds³``, float32 ``[resolution³, 3]``.

    Ordered with x slowest and z fastest, so ``values.reshape(R, R, R)[i, j, k]`` is the value at
    x index i, y index j, z index k.
    """
    low, _ = bounds
    h = grid_spacing(resolution, bounds)
    axis = low + h * (np.arange(resolution) + 0.5)  # [R]
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")  # each [R, R, R]
    return np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(np.float32)


def evaluate_field(
    sdf_fn: SdfFunction, points: np.ndarray, batch_points: int = BATCH_POINTS, lipschitz: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sdf_fn`` on ``points [N, 3]`` in batches of at most ``batch_points``: values and clearance,
    float32 ``[N]`` each (the clearance is ``|f| / lipschitz`` unless ``sdf_fn`` returns its own), and
    whether each value is exact, bool ``[N]`` (all True unless ``sdf_fn`` says otherwise).

    ``sdf_fn`` receives float32 numpy arrays and may return anything ``np.asarray`` reads (a
    TensorFlow tensor included) of shape ``[n]`` or ``[n, 1]``, or a pair or triple of those.
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    values = np.empty(len(points), dtype=np.float32)
    clearance = np.empty(len(points), dtype=np.float32)
    exact = np.ones(len(points), dtype=bool)
    for start in range(0, len(points), batch_points):
        batch = points[start : start + batch_points]
        result = sdf_fn(batch)
        parts = result if isinstance(result, tuple) else (result,)
        value, radius, known = parts + (None,) * (3 - len(parts))
        value = np.asarray(value, dtype=np.float32).reshape(-1)
        if value.shape[0] != len(batch):
            raise ValueError(f"sdf_fn returned {value.shape[0]} values for {len(batch)} points")
        piece = slice(start, start + len(batch))
        values[piece] = value
        clearance[piece] = np.abs(value) / lipschitz if radius is None else np.asarray(radius, np.float32).reshape(-1)
        if known is not None:
            exact[piece] = np.asarray(known, bool).reshape(-1)
    return values, clearance, exact


def evaluate_sdf(sdf_fn: SdfFunction, points: np.ndarray, batch_points: int = BATCH_POINTS) -> np.ndarray:
    """The values of :func:`evaluate_field`, float32 ``[N]``."""
    return evaluate_field(sdf_fn, points, batch_points)[0]


def mesh_from_grid(grid: np.ndarray, bounds=NORMALISED_BOX) -> trimesh.Trimesh:
    """Marching cubes at level 0 on SDF samples ``grid [R, R, R]`` at the cell centres of ``bounds³``.

    Faces are oriented outwards (negative inside). A grid without a sign change gives an empty mesh.
    """
    resolution = grid.shape[0]
    h = grid_spacing(resolution, bounds)
    if not (grid.min() < 0.0 < grid.max()):
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), process=False)
    # skimage orients faces by its "descent" rule; for an SDF (lower inside) that points them outwards.
    vertices, faces, _, _ = measure.marching_cubes(
        grid, level=0.0, spacing=(h, h, h), gradient_direction="descent", allow_degenerate=False
    )
    vertices = vertices + (bounds[0] + h / 2.0)
    return trimesh.Trimesh(vertices.astype(np.float64), faces.astype(np.int64), process=False)


def evaluate_grid(
    sdf_fn: SdfFunction,
    resolution: int = 128,
    bounds=NORMALISED_BOX,
    mode: str = "coarse_to_fine",
    initial_resolution: int = INITIAL_RESOLUTION,
    batch_points: int = BATCH_POINTS,
    lipschitz: float = 1.0,
    refine: RefineFunction | None = None,
) -> tuple[np.ndarray, ExtractionStats]:
    """SDF samples ``[R, R, R]`` float32 at the cell centres of ``bounds³``, and their cost.

    In ``"coarse_to_fine"`` mode the values far from the surface are interpolated, with the right
    sign (module docstring); ``resolution / initial_resolution`` must be a power of two. ``refine``
    recomputes the sign-only samples that marching cubes reads (needed when ``sdf_fn`` returns any).
    """
    values, stats, _ = _evaluate_grid(
        sdf_fn, resolution, bounds, mode, initial_resolution, batch_points, lipschitz, refine
    )
    return values, stats


def _evaluate_grid(
    sdf_fn, resolution, bounds, mode, initial_resolution, batch_points, lipschitz, refine
) -> tuple[np.ndarray, ExtractionStats, SettleFunction]:
    """:func:`evaluate_grid`'s values and stats, and a function that makes the values exact, in place,
    at any nodes (the sign-only samples among them recomputed with ``refine``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    stats = ExtractionStats(resolution=resolution)
    shape = (resolution,) * 3
    start = time.perf_counter()
    if mode == "dense":
        values, _, exact = evaluate_field(sdf_fn, sdf_grid_points(resolution, bounds), batch_points)
        values, exact = values.reshape(shape), exact.reshape(shape)
        inferred = np.zeros(shape, bool)
        stats.evaluations = values.size
        stats.stage_seconds["dense"] = time.perf_counter() - start
    else:
        lattice, exact, inferred = _coarse_to_fine_lattice(
            sdf_fn, resolution, bounds, initial_resolution, batch_points, lipschitz, stats
        )
        inside = (slice(resolution),) * 3
        values, exact, inferred = lattice[inside], exact[inside], inferred[inside]
    if not exact.all():  # the field returned sign-only samples
        if refine is None:
            raise ValueError("sdf_fn returned sign-only samples but no refine function was given")
    elif inferred.any():  # the field's values are exact: it refines the inferred nodes itself

        def refine(points):
            return evaluate_field(sdf_fn, points, batch_points)[0]

    if not (exact & ~inferred).all():
        start = time.perf_counter()
        stats.refinements = _refine_surface_cells(values, exact, inferred, refine, bounds, batch_points)
        stats.stage_seconds["refine"] = time.perf_counter() - start

    def settle(nodes):  # 3 × [M] node indices → their values made exact, in place (again for some refined above)
        open_ = ~exact[nodes] | inferred[nodes]
        nodes = tuple(index[open_] for index in nodes)
        if len(nodes[0]):
            h = grid_spacing(resolution, bounds)
            points = bounds[0] + h / 2.0 + h * np.stack(nodes, axis=-1)  # [M, 3]
            values[nodes] = evaluate_field(refine, points, batch_points)[0]
            exact[nodes], inferred[nodes] = True, False
            stats.refinements += len(points)

    return values, stats, settle


def fill_enclosed_cavities(grid: np.ndarray) -> int:
    """Make, in place, the enclosed outside nodes of ``grid [R, R, R]`` inside (module docstring): values
    ≥ 0 that no 26-connected path of such values joins to the border become −max(|f|, 1e-3). Returns
    how many there were."""
    outside = grid >= 0
    labels, count = ndimage.label(outside, structure=np.ones((3, 3, 3), bool))  # one pass; 0 = inside
    open_to_border = np.zeros(count + 1, bool)
    for face in (labels[[0, -1]], labels[:, [0, -1]], labels[:, :, [0, -1]]):
        open_to_border[face] = True
    cavity = outside & ~open_to_border[labels]
    grid[cavity] = -np.maximum(np.abs(grid[cavity]), 1e-3)
    return int(cavity.sum())


def extract_mesh(
    sdf_fn: SdfFunction,
    resolution: int = 128,
    bounds=NORMALISED_BOX,
    fill_cavities: bool = False,
    bridging: GapBridging | None = None,
    mode: str = "coarse_to_fine",
    initial_resolution: int = INITIAL_RESOLUTION,
    batch_points: int = BATCH_POINTS,
    lipschitz: float = 1.0,
    refine: RefineFunction | None = None,
) -> tuple[trimesh.Trimesh, ExtractionStats]:
    """The zero level set of ``sdf_fn`` on ``bounds³`` at ``resolution³``; ``mode``, ``initial_resolution``,
    ``batch_points``, ``lipschitz`` and ``refine`` as :func:`evaluate_grid`.
    ``bridging``: join the parts the field leaves apart by a hair (:mod:`d2im_tf.inference.bridging`);
    ``fill_cavities``: then leave out the surfaces of enclosed cavities (module docstring).

    Returns the mesh (possibly empty) and the :class:`ExtractionStats`, whose ``stage_seconds``
    include ``"marching_cubes"``.
    """
    grid, stats, settle = _evaluate_grid(
        sdf_fn, resolution, bounds, mode, initial_resolution, batch_points, lipschitz, refine
    )
    if bridging is not None:
        start = time.perf_counter()
        stats.bridges = bridge_gaps(grid, bridging, grid_spacing(resolution, bounds), settle)
        stats.stage_seconds["bridging"] = time.perf_counter() - start
    start = time.perf_counter()
    if fill_cavities:
        stats.cavity_nodes = fill_enclosed_cavities(grid)
    mesh = mesh_from_grid(grid, bounds)
    stats.stage_seconds["marching_cubes"] = time.perf_counter() - start
    return mesh, stats


# --------------------------------------------------------------------------------------------
# Coarse-to-fine


def extract_fused_mesh(
    decode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    maps: np.ndarray,
    resolution: int,
    base_lipschitz: float,
    bounds=NORMALISED_BOX,
    decode_bounds: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    fuse: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    projection: np.ndarray | None = None,
    lowering=None,
    **grid_options,
) -> tuple[trimesh.Trimesh, ExtractionStats]:
    """The zero level set of D²IM-Net's fused field in the box ``bounds`` (default the normalised frame's
    :data:`~d2im_tf.geometry.frames.NORMALISED_BOX`; ``WORLD_BOX`` for a model working in the world frame),
    coarse-to-fine cells certified with :func:`displaced_field_clearance`.

    ``decode(points [N, 3]) -> (fused [N], base [N])`` in the model's units; ``maps`` ``[S, S, 2]``
    the image's displacement maps (zeros for variants without); ``grid_options`` as :func:`extract_mesh`.

    ``decode_bounds(points) -> (base [N], displacements [N, 2])``, if given, is the base field and both
    maps at the points' projections, without the front/back split (one decoder pass instead of two).
    The fused value lies between ``base + min`` and ``base + max`` of the two displacements; where
    that interval excludes 0 its end is taken as a sign-only sample (module docstring); elsewhere,
    and at the corners of the cells the surface passes through, the exact value is computed: by
    ``fuse(points, base, displacements) -> fused [N]`` from the node's known bounds (the split's pass
    only) if given, else by ``decode``. The mesh is the same.

    ``projection`` ``[3, 4]``, if given, is the camera the maps are read through (pixels of ``maps``, the
    frame of the points): the clearances then use the displacements possible near each node
    (:class:`LocalDisplacementRange`) instead of the whole image's. A node's clearance is only ever
    compared with the diagonals of the cells it is a corner of, the largest of stride ``s``, the
    largest power of two (up to the first level's) dividing its lattice indices: the range is taken
    within a little more than that diagonal.

    ``lowering``, if given, is subtracted from the fused field: ``lowering(points) -> [N]`` (≥ 0), with
    ``lowering.largest`` its largest value anywhere and ``lowering.bound(points, radius) -> [N]`` its
    largest within the cube ``points + [-radius, radius]³`` (:class:`~d2im_tf.inference.silhouette_completion.
    Completion`); the clearances widen the displacements' range by it downwards.
    """
    local_range = None
    if projection is not None and grid_options.get("mode", "coarse_to_fine") == "coarse_to_fine":
        local_range = LocalDisplacementRange(maps, projection)
        h = grid_spacing(resolution, bounds)
        first_stride = resolution // grid_options.get("initial_resolution", INITIAL_RESOLUTION)
    span = displacement_range(maps) if local_range is None else local_range.global_range

    def lowered(points):  # [N, 3] → the lowering [N] at the points (zeros without one)
        return np.zeros(len(points), np.float32) if lowering is None else np.asarray(lowering(points), np.float32)

    def clearance(points, values, base):  # [N, 3], [N], [N] → [N]
        if local_range is None:
            low, high = span
            if lowering is not None:
                low -= lowering.largest
            return displaced_field_clearance(values, base, (low, high), base_lipschitz)
        index = lattice_indices(points, bounds, h)  # [N, 3]
        bits = index[:, 0] | index[:, 1] | index[:, 2] | first_stride
        radius = 1.01 * np.sqrt(3.0) * h * (bits & -bits)  # [N]: above the largest diagonal needed
        low, high = local_range(points, radius)
        if lowering is not None:
            low = low - lowering.bound(points, radius)
        return displaced_field_clearance(values, base, (low, high), base_lipschitz, radius)

    def exact_sdf(points):  # [N, 3] → fused [N] and its clearance [N]
        fused, base = (np.asarray(value, np.float32).reshape(-1) for value in decode(points))
        fused = fused - lowered(points)
        return fused, clearance(points, fused, base)

    if decode_bounds is None:
        return extract_mesh(exact_sdf, resolution, bounds, **grid_options)
    known = None if fuse is None else _NodeBounds(resolution, bounds)  # without fuse, decode from scratch
    inline_refinements = 0  # samples whose sign the bounds leave open, computed exactly at once

    def exact_values(points, base, displacements, lowering_values=None):  # [N, 3] and their bounds → fused [N]
        if known is None:
            return exact_sdf(points)[0]
        if lowering_values is None:
            lowering_values = lowered(points)
        return np.asarray(fuse(points, base, displacements), np.float32).reshape(-1) - lowering_values

    def bounded_sdf(points):  # [N, 3] → values [N] (exact where `exact`, else sign only), clearance [N], exact [N]
        nonlocal inline_refinements
        base, displacements = decode_bounds(points)
        base = np.asarray(base, np.float32).reshape(-1)
        displacements = np.asarray(displacements, np.float32).reshape(-1, 2)
        lowering_values = lowered(points)
        below = base - lowering_values
        low, high = below + displacements.min(axis=-1), below + displacements.max(axis=-1)
        values = np.where(low > 0, low, high)
        exact = (low <= SIGN_MARGIN) & (high >= -SIGN_MARGIN)
        if exact.any():
            values[exact] = exact_values(points[exact], base[exact], displacements[exact], lowering_values[exact])
            inline_refinements += int(exact.sum())
        if known is not None and not exact.all():
            known.store(points[~exact], base[~exact], displacements[~exact])
        return values, clearance(points, values, base), exact

    def refine(points):  # sign-only samples → their exact values (nodes never evaluated: from scratch)
        if known is None:
            return exact_sdf(points)[0]
        values = np.empty(len(points), np.float32)
        stored = known.has(points)
        if stored.any():
            values[stored] = exact_values(points[stored], *known.at(points[stored]))
        if not stored.all():
            values[~stored] = exact_sdf(points[~stored])[0]
        return values

    mesh, stats = extract_mesh(bounded_sdf, resolution, bounds, refine=refine, **grid_options)
    stats.refinements += inline_refinements
    return mesh, stats


class _NodeBounds:
    """f_B and both displacements ``[3]`` float32 per node of the coarse-to-fine lattice (``R + 1`` nodes
    per axis, module docstring), stored for the sign-only samples that may be refined later; a node is
    found from its grid point (every point the extraction evaluates is one)."""

    def __init__(self, resolution: int, bounds):
        self.size = resolution + 1
        self.bounds, self.spacing = bounds, grid_spacing(resolution, bounds)
        self.values = np.zeros((self.size**3, 3), np.float32)  # 26 MB at 128³
        self.stored = np.zeros(self.size**3, bool)

    def _index(self, points: np.ndarray) -> np.ndarray:
        ijk = lattice_indices(points, self.bounds, self.spacing)  # [N, 3]
        return (ijk[:, 0] * self.size + ijk[:, 1]) * self.size + ijk[:, 2]

    def store(self, points: np.ndarray, base: np.ndarray, displacements: np.ndarray) -> None:
        index = self._index(points)
        self.values[index] = np.column_stack([base, displacements])
        self.stored[index] = True

    def has(self, points: np.ndarray) -> np.ndarray:
        """Whether bounds were stored for ``points`` ``[N, 3]``: bool ``[N]``."""
        return self.stored[self._index(points)]

    def at(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(base [N], displacements [N, 2]) stored for ``points``."""
        values = self.values[self._index(points)]
        return values[:, 0], values[:, 1:]


def _coarse_to_fine_lattice(
    sdf_fn, resolution, bounds, initial_resolution, batch_points, lipschitz, stats
) -> tuple[np.ndarray, np.ndarray]:
    """The full ``[R+1]³`` lattice of the module docstring, evaluated in the band and interpolated
    elsewhere, and which of its values are exact ``[R+1]³`` bool (False: a sign-only sample)."""
    if not levels_fit(resolution, initial_resolution):
        raise ValueError(
            f"resolution / initial_resolution must be a power of two, got {resolution} / {initial_resolution}"
        )
    ratio = resolution // initial_resolution
    h = grid_spacing(resolution, bounds)
    origin = bounds[0] + h / 2.0
    size = resolution + 1
    lattice = np.full((size, size, size), np.nan, dtype=np.float32)
    clearance = np.zeros((size, size, size), dtype=np.float32)  # zero-free radius around each node
    exact = np.ones((size, size, size), dtype=bool)
    inferred = np.zeros((size, size, size), dtype=bool)  # signs settled by a neighbour, never evaluated

    def evaluate(node_mask: np.ndarray, stride: int) -> None:
        # node_mask [n, n, n] over the nodes of this stride; evaluates those still unknown, except those
        # inside the zero-free ball of a corner of the cell they split (they take its sign).
        view = lattice[::stride, ::stride, ::stride]
        pending = node_mask & np.isnan(view)
        if stride < ratio:
            coarse = 2 * stride
            value, radius = _inherited_from_corners(
                lattice[::coarse, ::coarse, ::coarse], clearance[::coarse, ::coarse, ::coarse], stride * h
            )
            settled = pending & (radius > 0)
            view[settled] = value[settled]
            clearance[::stride, ::stride, ::stride][settled] = radius[settled]
            inferred[::stride, ::stride, ::stride][settled] = True
            pending &= ~settled
            stats.inferred += int(settled.sum())
        indices = np.nonzero(pending)  # 3 × [M]
        points = origin + h * stride * np.stack(indices, axis=-1)  # [M, 3]
        (
            view[indices],
            clearance[::stride, ::stride, ::stride][indices],
            exact[::stride, ::stride, ::stride][indices],
        ) = evaluate_field(sdf_fn, points, batch_points, lipschitz)
        stats.evaluations += len(points)

    stride = ratio
    start = time.perf_counter()
    evaluate(np.ones((initial_resolution + 1,) * 3, dtype=bool), stride)
    candidates = np.ones((initial_resolution,) * 3, dtype=bool)  # cells of this stride to test
    stats.stage_seconds[f"level_{initial_resolution}"] = time.perf_counter() - start
    while stride > 1:
        start = time.perf_counter()
        lowest, highest = _corner_extremes(lattice[::stride, ::stride, ::stride])  # [n, n, n] each
        diagonal = np.sqrt(3.0) * stride * h
        same_sign = (lowest > 0) | (highest < 0)
        least_radius, largest_radius = _corner_extremes(clearance[::stride, ::stride, ::stride])
        # zero-free: within the ball of one corner, or of the nearest corner (≤ half the diagonal away)
        certified = same_sign & ((largest_radius > diagonal) | (least_radius > diagonal / 2))
        active = candidates & ~certified  # [n, n, n]
        stride //= 2
        evaluate(_nodes_of_cells(active), stride)
        candidates = active.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
        stats.stage_seconds[f"level_{resolution // stride}"] = time.perf_counter() - start
    start = time.perf_counter()
    _fill_by_interpolation(lattice, ratio)
    stats.stage_seconds["fill"] = time.perf_counter() - start
    return lattice, exact, inferred


def _inherited_from_corners(values: np.ndarray, clearance: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """What the nodes ``[n+1]³`` (``values``, ``clearance``) of one stride tell of the new nodes of the
    half-stride grid ``[2n+1]³`` (``step`` apart): each new node takes the value (the sign) of the
    corner with the largest clearance among those of the cell, face or edge it halves, and that
    clearance less its distance to the corner, ``step·√k`` for ``k`` odd indices. Where the result is
    positive the node lies inside the corner's zero-free ball, with that much room. Old nodes get
    NaN and −inf. Returns ``(values, clearance)``, float32 ``[2n+1]³`` each."""
    size = 2 * values.shape[0] - 1
    out_values = np.full((size,) * 3, np.nan, np.float32)
    out_clearance = np.full((size,) * 3, -np.inf, np.float32)
    for parity in itertools.product((0, 1), repeat=3):
        if not any(parity):
            continue
        value, radius = values, clearance
        for axis in np.flatnonzero(parity):  # the best of the two neighbours along each odd axis
            low = tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))
            high = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
            value = np.where(radius[low] >= radius[high], value[low], value[high])
            radius = np.maximum(radius[low], radius[high])
        target = tuple(slice(odd, None, 2) for odd in parity)
        out_values[target] = value
        out_clearance[target] = radius - step * np.sqrt(sum(parity))
    return out_values, out_clearance


def _refine_surface_cells(
    values: np.ndarray, exact: np.ndarray, inferred: np.ndarray, refine: RefineFunction, bounds, batch_points: int
) -> int:
    """Replace, in place, the sign-only samples of ``values [R, R, R]`` (``exact`` False: the field's own,
    or ``inferred`` by coarse-to-fine) that are corners of a cell whose corners differ in sign by
    ``refine``'s exact values; returns how many there were.

    Marching cubes reads the values of such cells only, and of those not just the ends of the crossing
    edges: its Lewiner variant decides ambiguous cells with all four values of a face or all eight of
    the cell. A field's own sign-only sample must have had the right sign (its bounds are exact, so a
    wrong one is an error); an inferred sign rests on the Lipschitz bound, and the exact value simply
    replaces it."""
    lowest, highest = _corner_extremes(np.sign(values))  # [R-1]³ each; a node at exactly 0 differs from both sides
    mixed = lowest != highest  # [R-1]³ cells the surface passes through
    on_surface_cell = np.zeros(values.shape, dtype=bool)
    for corner in _corner_views(on_surface_cell):
        corner |= mixed
    indices = np.nonzero(on_surface_cell & (~exact | inferred))  # 3 × [M]
    h = grid_spacing(values.shape[0], bounds)
    points = bounds[0] + h / 2.0 + h * np.stack(indices, axis=-1)  # [M, 3]
    refined = evaluate_field(refine, points, batch_points)[0]
    if np.any((np.sign(refined) != np.sign(values[indices])) & ~inferred[indices]):
        raise ValueError("a sign-only sample had the wrong sign: the field's bounds do not hold")
    values[indices] = refined
    return len(points)


def _corner_views(nodes: np.ndarray) -> list[np.ndarray]:
    """The 8 views ``[n, n, n]`` of a node grid ``[n+1]³`` that put each cell's corner (dx, dy, dz) at the
    cell's index (writable: they share ``nodes``' memory)."""
    n = nodes.shape[0] - 1
    return [nodes[dx : dx + n, dy : dy + n, dz : dz + n] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)]


def _corner_extremes(nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least and the largest of the 8 corner values of each cell of a node grid ``[n+1]³``: two
    ``[n, n, n]`` arrays."""
    views = _corner_views(nodes)
    lowest, highest = np.minimum(views[0], views[1]), np.maximum(views[0], views[1])
    for view in views[2:]:
        np.minimum(lowest, view, out=lowest)
        np.maximum(highest, view, out=highest)
    return lowest, highest


def _nodes_of_cells(cells: np.ndarray) -> np.ndarray:
    """Mask of the nodes of the half-stride grid ``[2n+1]³`` lying in (or on) the cells ``[n]³``."""
    n = cells.shape[0]
    nodes = np.zeros((2 * n + 1,) * 3, dtype=bool)
    for dx in range(3):
        for dy in range(3):
            for dz in range(3):
                nodes[dx : dx + 2 * n : 2, dy : dy + 2 * n : 2, dz : dz + 2 * n : 2] |= cells
    return nodes


def _fill_by_interpolation(lattice: np.ndarray, coarsest_stride: int) -> None:
    """Fill the unknown (NaN) nodes by trilinear interpolation, from the coarsest stride down.

    The nodes of ``coarsest_stride`` are all known; at each halving, the midpoints of a known grid are
    the averages of their two neighbours along each axis in turn (edges, then faces, then centres).
    """
    stride = coarsest_stride
    while stride > 1:
        half = stride // 2
        fine = _upsample_linear(lattice[::stride, ::stride, ::stride])  # [2n+1]³
        view = lattice[::half, ::half, ::half]
        unknown = np.isnan(view)
        view[unknown] = fine[unknown]
        stride = half


def _upsample_linear(nodes: np.ndarray) -> np.ndarray:
    """Trilinear ×2 upsampling of a node grid ``[n+1]³`` to ``[2n+1]³``."""
    for axis in range(3):
        nodes = np.moveaxis(nodes, axis, 0)
        out = np.empty((2 * nodes.shape[0] - 1,) + nodes.shape[1:], dtype=nodes.dtype)
        out[::2] = nodes
        out[1::2] = 0.5 * (nodes[:-1] + nodes[1:])
        nodes = np.moveaxis(out, 0, axis)
    return nodes
