"""Gap bridging (d2im_tf.inference.bridging) on a leg under a table top, the exact SDF of two boxes."""

import numpy as np
import pytest

from d2im_tf.inference import extraction
from d2im_tf.inference.bridging import GapBridging, bridge_gaps

BOX = (-1.0, 1.0)
RESOLUTION = 64  # cell spacing 1/32
H = 2.0 / RESOLUTION
LEG_HALF = 0.06  # the leg's half width in x and z
GAP = 0.05  # between the leg's top (y = -GAP/2) and the top's underside (y = +GAP/2)


def box_sdf(points, low, high):
    """The exact SDF of the axis-aligned box [low, high] at ``points [N, 3]``."""
    centre, half = (np.add(low, high)) / 2.0, (np.subtract(high, low)) / 2.0
    q = np.abs(points - centre) - half
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def table(points):
    """A leg stopping ``GAP`` short of a table top: the union's exact SDF (the boxes are apart)."""
    leg = box_sdf(points, (-LEG_HALF, -0.6, -LEG_HALF), (LEG_HALF, -GAP / 2, LEG_HALF))
    top = box_sdf(points, (-0.5, GAP / 2, -0.5), (0.5, GAP / 2 + 0.1, 0.5))
    return np.minimum(leg, top).astype(np.float32)


def grid_of(field):
    return field(extraction.sdf_grid_points(RESOLUTION, BOX)).reshape((RESOLUTION,) * 3)


def parts(mesh):
    return len(mesh.split(only_watertight=False))


def test_a_gap_the_level_set_closes_is_bridged_in_the_gap_only():
    """The nodes between leg and top lie within GAP/2 of the boxes: with a level above that, one bridge
    joins them, lowering by the level exactly the gap's outside nodes below it, above the leg."""
    grid = grid_of(table)
    assert parts(extraction.mesh_from_grid(grid, BOX)) == 2
    bridged = grid.copy()
    level = GAP / 2
    assert bridge_gaps(bridged, GapBridging(level=level, max_gap=0.2), H) == 1
    assert parts(extraction.mesh_from_grid(bridged, BOX)) == 1

    points = extraction.sdf_grid_points(RESOLUTION, BOX)  # [R³, 3]
    changed = (bridged != grid).ravel()
    np.testing.assert_allclose(bridged.ravel()[changed], grid.ravel()[changed] - level)
    assert (grid.ravel()[changed] >= 0).all() and (grid.ravel()[changed] < level).all()
    # the corridor: nodes at most the slack (2 cells) further from both boxes than the gap is long; the
    # grid measures distances between node centres, within a cell of the boxes' true ones
    to_leg = box_sdf(points, (-LEG_HALF, -0.6, -LEG_HALF), (LEG_HALF, -GAP / 2, LEG_HALF))
    to_top = box_sdf(points, (-0.5, GAP / 2, -0.5), (0.5, GAP / 2 + 0.1, 0.5))
    assert (to_leg[changed] + to_top[changed] <= GAP + 3 * H).all()
    # the leg's own column is bridged throughout: all of its gap nodes are within GAP/2 of a box
    column = (np.abs(points[:, 1]) < GAP / 2) & (np.abs(points[:, 0]) < LEG_HALF) & (np.abs(points[:, 2]) < LEG_HALF)
    assert column.any() and changed[column].all()


@pytest.mark.parametrize(
    "bridging",
    [
        GapBridging(level=0.005, max_gap=0.2),  # the gap's nodes (GAP/2 - H/2 ≈ 0.009 from the boxes) stay outside
        GapBridging(level=GAP, max_gap=GAP / 2),  # a gap wider than allowed
    ],
    ids=["level below the gap's", "gap beyond max_gap"],
)
def test_a_gap_the_settings_do_not_allow_stays(bridging):
    grid = grid_of(table)
    before = grid.copy()
    assert bridge_gaps(grid, bridging, H) == 0
    np.testing.assert_array_equal(grid, before)


def test_parts_far_apart_stay_apart_whatever_the_level():
    """Two boxes 0.3 apart (10 cells) with max_gap 0.2: nothing is bridged, though the level would."""

    def two_blocks(points):
        left = box_sdf(points, (-0.5, -0.2, -0.2), (-0.15, 0.2, 0.2))
        right = box_sdf(points, (0.15, -0.2, -0.2), (0.5, 0.2, 0.2))
        return np.minimum(left, right).astype(np.float32)

    grid = grid_of(two_blocks)
    assert bridge_gaps(grid, GapBridging(level=0.5, max_gap=0.2), H) == 0
    assert parts(extraction.mesh_from_grid(grid, BOX)) == 2


def test_coarse_to_fine_bridges_as_the_dense_grid_does():
    """Coarse-to-fine's interpolated nodes are made exact where the bridge reads them: the same mesh."""
    bridging = GapBridging(level=GAP / 2, max_gap=0.2)
    dense, dense_stats = extraction.extract_mesh(table, RESOLUTION, BOX, bridging=bridging, mode="dense")
    fine, fine_stats = extraction.extract_mesh(
        table, RESOLUTION, BOX, bridging=bridging, mode="coarse_to_fine", initial_resolution=16
    )
    assert dense_stats.bridges == fine_stats.bridges == 1
    assert parts(dense) == parts(fine) == 1
    np.testing.assert_allclose(fine.vertices, dense.vertices, atol=1e-6)
    np.testing.assert_array_equal(fine.faces, dense.faces)
    kept, kept_stats = extraction.extract_mesh(table, RESOLUTION, BOX, mode="coarse_to_fine", initial_resolution=16)
    assert kept_stats.bridges == 0 and parts(kept) == 2


def test_defaults_scale_with_the_box_and_the_field_units():
    normalised = GapBridging.for_box(2.0, 10.0)  # the normalised frame, fields in 10× units
    assert normalised.level == pytest.approx(0.1) and normalised.max_gap == pytest.approx(0.125)
    world = GapBridging.for_box(1.0, 10.0)
    assert world.level == pytest.approx(0.05) and world.max_gap == pytest.approx(0.0625)
