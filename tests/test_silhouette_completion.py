"""The base field's completion against the silhouette (d2im_tf.inference.silhouette_completion).

A known case: a table whose base field holds the top but only a shallow valley, never reaching zero,
where its leg is; the foreground is the whole table's, drawn independently by ray casting its mesh.
The completion must bring the leg back where the valley is (from the side too, deep, not a sheet),
leave the background alone, and the coarse-to-fine extraction of the completed field must still be the
dense one. A harder case puts, straight behind the leg as seen, a deeper valley (a part the field
half-imagines) and a bar the field does hold: the leg must still come back whole, on its own axis.
"""

import numpy as np
import pytest
import trimesh

from d2im_tf.evaluation.silhouette import render_with_projection
from d2im_tf.geometry import camera
from d2im_tf.geometry.frames import NORMALISED_BOX
from d2im_tf.inference import extraction
from d2im_tf.inference.silhouette_completion import DEPTH_PER_WIDTH, complete_silhouette, foreground_rays

from conftest import ROOT

SIZE = 96
SCALE = 10.0  # sdf_scale: the base field's units are the distance × 10, as a trained model's
TOP = (np.array([-0.6, 0.1, -0.4]), np.array([0.6, 0.25, 0.4]))  # the table top, an axis-aligned box (low, high)
LEG_AXIS, LEG_RADIUS, LEG_BOTTOM = np.array([0.4, -0.25]), 0.03, -0.7  # a vertical leg at (x, z), under the top


def box_sdf(points, low, high):
    centre, half = (low + high) / 2, (high - low) / 2
    q = np.abs(points - centre) - half
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def leg_sdf(points):
    """The capped vertical cylinder from the floor ``LEG_BOTTOM`` to the top's underside."""
    radial = np.linalg.norm(points[:, [0, 2]] - LEG_AXIS, axis=1) - LEG_RADIUS
    below, above = LEG_BOTTOM - points[:, 1], points[:, 1] - TOP[0][1]
    vertical = np.maximum(below, above)
    outside = np.linalg.norm(np.stack([np.maximum(radial, 0.0), np.maximum(vertical, 0.0)], axis=1), axis=1)
    return outside + np.minimum(np.maximum(radial, vertical), 0.0)


def behind_leg(distance: float) -> np.ndarray:
    """``(x, z)`` of the point ``distance`` behind the leg's axis, straight away from the camera."""
    centre = camera.projection_centre_numpy(projection())[[0, 2]]
    away = (LEG_AXIS - centre) / np.linalg.norm(LEG_AXIS - centre)
    return LEG_AXIS + distance * away


def base_field(points, hint: float = LEG_RADIUS + 0.02):
    """Model units: the top, and the leg's field raised by ``hint`` (above the leg's radius: a valley that
    stays above zero)."""
    points = np.asarray(points, np.float64)
    return (SCALE * np.minimum(box_sdf(points, *TOP), leg_sdf(points) + hint)).astype(np.float32)


def table_mesh(leg_radius: float = LEG_RADIUS) -> trimesh.Trimesh:
    top = trimesh.creation.box(bounds=np.stack(TOP))
    height = TOP[0][1] - LEG_BOTTOM
    leg = trimesh.creation.cylinder(radius=leg_radius, height=height, sections=48)
    leg.apply_transform(
        trimesh.transformations.translation_matrix([LEG_AXIS[0], LEG_BOTTOM + height / 2, LEG_AXIS[1]])
        @ trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0])
    )
    return trimesh.util.concatenate([top, leg])


def projection() -> np.ndarray:
    """A view of the normalised frame (world = normalised / 2) for ``SIZE`` pixels, level with the top's
    underside: nothing of the leg is hidden behind the top (a hidden part cannot be completed)."""
    rotation, translation = camera.world_to_camera(35.0, 0.0, 0.9)
    return camera.intrinsics(SIZE) @ np.hstack([rotation, translation[:, None]]) @ np.diag([0.5, 0.5, 0.5, 1.0])


def completed_mesh(completion, resolution=128, **options):
    zero_maps = np.zeros((SIZE, SIZE, 2), np.float32)

    def decode(points):  # no displacement: the fused field is the base field
        base = base_field(points)
        return base, base

    return extraction.extract_fused_mesh(
        decode, zero_maps, resolution, 2.0 * SCALE, projection=projection(), lowering=completion, **options
    )


@pytest.fixture(scope="module")
def completion():
    foreground = render_with_projection(table_mesh(), projection(), SIZE, SIZE)[0]
    return complete_silhouette(base_field, projection(), foreground, SCALE), foreground


def test_rays_cross_the_box_at_evenly_spaced_samples():
    """Each foreground ray's samples project back onto its own pixel's centre, inside the box."""
    foreground = np.zeros((SIZE, SIZE), bool)
    foreground[40:44, 50:52] = True
    pixels, depths, points = foreground_rays(projection(), foreground, NORMALISED_BOX, samples=8)
    assert len(pixels) == 8 and points.shape == (8, 8, 3)
    homogeneous = points.reshape(-1, 3) @ projection()[:, :3].T + projection()[:, 3]
    uv = (homogeneous[:, :2] / homogeneous[:, 2:]).reshape(8, 8, 2)
    np.testing.assert_allclose(uv, np.repeat(pixels[:, None, ::-1] + 0.5, 8, axis=1), atol=1e-6)
    assert np.all(np.abs(points) <= 1.0 + 1e-9)
    assert np.all(np.diff(depths, axis=1) > 0)


def test_the_leg_comes_back_where_its_valley_is(completion):
    completion, foreground = completion
    assert completion is not None and completion.pixels > 20
    before, _ = completed_mesh(None)
    after, _ = completed_mesh(completion)
    assert before.vertices[:, 1].min() > TOP[0][1] - 0.05  # the top alone: no leg
    drawn_before = render_with_projection(before, projection(), SIZE, SIZE)[0]
    drawn_after = render_with_projection(after, projection(), SIZE, SIZE)[0]
    missed_before, missed_after = (
        (foreground & ~drawn).sum() / foreground.sum() for drawn in (drawn_before, drawn_after)
    )
    assert missed_before > 0.15 and missed_after < 0.35 * missed_before, (missed_before, missed_after)
    assert not (drawn_after & ~foreground).any()
    # from the side: the new part stands on the leg's axis, from the top down to near the floor, about as
    # wide as the leg (a 128³ grid's cell is 1/64)
    below = after.vertices[after.vertices[:, 1] < TOP[0][1] - 0.05]
    off_axis = np.linalg.norm(below[:, [0, 2]] - LEG_AXIS, axis=1)
    assert below[:, 1].min() < LEG_BOTTOM + 0.1
    assert np.percentile(off_axis, 95) < LEG_RADIUS + 1.0 / 64, np.percentile(off_axis, 95)
    assert len(after.split(only_watertight=False)) == 1


def test_a_completed_leg_is_as_deep_as_the_image_says_it_is_wide():
    """A field whose hint of a thick leg is a sheet across the view, thin in depth (as a model's valley
    often is): the new part is ``DEPTH_PER_WIDTH`` times as deep as it is wide, not a sheet."""
    radius = 2 * LEG_RADIUS
    away = behind_leg(1.0) - LEG_AXIS  # unit: the rays' horizontal direction at the leg
    across = np.array([-away[1], away[0]])

    def field(points):
        points = np.asarray(points, np.float64)
        offset = points[:, [0, 2]] - LEG_AXIS
        local = np.stack([offset @ across, points[:, 1], offset @ away], axis=1)  # (across, up, along the rays)
        low, high = np.array([-radius, LEG_BOTTOM, -0.004]), np.array([radius, TOP[0][1], 0.004])
        sheet = box_sdf(local, low, high) + 0.02  # a valley 0.02 above zero, 0.008 thick along the rays
        return (SCALE * np.minimum(box_sdf(points, *TOP), sheet)).astype(np.float32)

    foreground = render_with_projection(table_mesh(radius), projection(), SIZE, SIZE)[0]
    completion = complete_silhouette(field, projection(), foreground, SCALE)
    zero_maps = np.zeros((SIZE, SIZE, 2), np.float32)
    after, _ = extraction.extract_fused_mesh(
        lambda points: (field(points), field(points)),
        zero_maps,
        128,
        2.0 * SCALE,
        projection=projection(),
        lowering=completion,
    )
    below = after.vertices[after.vertices[:, 1] < TOP[0][1] - 0.05][:, [0, 2]] - LEG_AXIS
    depth, width = np.ptp(below @ away), np.ptp(below @ across)
    assert width > 1.5 * radius, width
    assert DEPTH_PER_WIDTH * width - 1.0 / 128 < depth < DEPTH_PER_WIDTH * width + 1.0 / 32, (depth, width)


BAR = (np.array([-0.15, -0.45, -0.03]), np.array([0.15, -0.35, 0.03]))  # (low, high) about its centre


def bar_at(distance: float):
    """A bar's box (low, high) across the view, ``distance`` behind the leg, at mid-height."""
    x, z = behind_leg(distance)
    return BAR[0] + [x, 0.0, z], BAR[1] + [x, 0.0, z]


def test_the_leg_is_followed_from_the_top_past_a_deeper_valley_and_a_part_behind():
    """The field also holds, straight behind the leg as seen, a second leg's valley deeper than the
    leg's own (still above zero) and a bar across the view that it does hold: rays through the leg's
    middle come closest to the surface far behind it, or enter the bar there. The leg comes back on its
    own axis, whole from the top down."""
    ghost, bar = behind_leg(0.6), bar_at(0.6)

    def field(points):
        points = np.asarray(points, np.float64)
        shifted = points.copy()
        shifted[:, [0, 2]] += LEG_AXIS - ghost
        ghost_leg = leg_sdf(shifted) + LEG_RADIUS + 0.005  # a valley 0.005 above zero, the leg's is 0.02
        return np.minimum(base_field(points), SCALE * np.minimum(ghost_leg, box_sdf(points, *bar))).astype(np.float32)

    bar_mesh = trimesh.creation.box(bounds=np.stack(bar))
    foreground = render_with_projection(trimesh.util.concatenate([table_mesh(), bar_mesh]), projection(), SIZE, SIZE)[0]
    completion = complete_silhouette(field, projection(), foreground, SCALE)
    zero_maps = np.zeros((SIZE, SIZE, 2), np.float32)

    def decode(points):
        base = field(points)
        return base, base

    after, _ = extraction.extract_fused_mesh(
        decode, zero_maps, 128, 2.0 * SCALE, projection=projection(), lowering=completion
    )
    new = after.vertices[(after.vertices[:, 1] < TOP[0][1] - 0.05) & (after.vertices[:, 1] > LEG_BOTTOM + 0.05)]
    on_leg = np.linalg.norm(new[:, [0, 2]] - LEG_AXIS, axis=1) < LEG_RADIUS + 1.0 / 32
    on_ghost = np.linalg.norm(new[:, [0, 2]] - ghost, axis=1) < 0.1
    in_bar = np.all((new > bar[0] - 0.02) & (new < bar[1] + 0.02), axis=1)
    assert not (on_ghost & ~in_bar).any()  # nothing raised where the deeper valley is
    heights = np.sort(new[on_leg, 1])  # the leg, from the floor to the top, with no gap over two cells
    assert heights[0] < LEG_BOTTOM + 0.1 and heights[-1] > TOP[0][1] - 0.1
    assert np.diff(heights).max() < 2.0 / 64, np.diff(heights).max()


def test_only_foreground_rays_are_lowered(completion):
    """A point is lowered only if it projects within a pixel of a completed pixel, and never by more
    than its bound."""
    completion, foreground = completion
    rng = np.random.default_rng(0)
    points = rng.uniform(-1.0, 1.0, (20000, 3))
    lowered = completion(points)
    homogeneous = points @ projection()[:, :3].T + projection()[:, 3]
    uv = homogeneous[:, :2] / homogeneous[:, 2:]
    column, row = np.clip(np.floor(uv).astype(int), 0, SIZE - 1).T
    from scipy import ndimage

    near = ndimage.binary_dilation(completion.lowering > 0, iterations=1)
    assert np.all(lowered[~near[row, column]] == 0.0)
    assert lowered.max() > 0 and lowered.max() <= completion.largest + 1e-6
    radius = rng.choice([0.01, 0.05, 0.2], len(points))
    for offset in ([1, 1, 1], [-1, 0.5, 0], [0, 0, 0]):
        moved = points + radius[:, None] * np.array(offset)
        assert np.all(completion(moved) <= completion.bound(points, radius) + 1e-6)


def test_a_base_field_that_covers_the_foreground_needs_no_completion():
    foreground = render_with_projection(table_mesh(), projection(), SIZE, SIZE)[0]

    def fattened(points):  # the whole table, 0.02 thicker than drawn: every foreground ray enters it
        return base_field(points, hint=0.0) - 0.02 * SCALE

    assert complete_silhouette(fattened, projection(), foreground, SCALE) is None


def test_coarse_to_fine_gives_the_dense_mesh_of_the_completed_field(completion):
    completion, _ = completion
    dense, _ = completed_mesh(completion, resolution=64, mode="dense")
    fine, stats = completed_mesh(completion, resolution=64, initial_resolution=16)
    assert len(fine.faces) == len(dense.faces) > 0
    np.testing.assert_allclose(np.sort(fine.vertices, axis=0), np.sort(dense.vertices, axis=0), atol=1e-6)
    assert stats.evaluations < 0.5 * 64**3


def test_completion_is_opt_in_on_the_command_line(tiny_export, tmp_path):
    """``--completion on`` reaches the reconstructor (off by default), which then completes before extracting."""
    import argparse

    from d2im_tf.commands.reconstruct import input_arguments, input_options
    from d2im_tf.data.disn_format import read_image
    from d2im_tf.inference.reconstruct import Reconstructor

    parser = argparse.ArgumentParser()
    input_arguments(parser)
    assert input_options(parser.parse_args([]))["complete"] is False
    assert input_options(parser.parse_args(["--completion", "on"]))["complete"] is True
    without = argparse.ArgumentParser()
    input_arguments(without, completion=False)  # the applications compose fields: no completion
    assert input_options(without.parse_args([]))["complete"] is False
    pixels = read_image(ROOT / "examples" / "04379243_syn00001.png")
    model = tiny_export("full", with_camera=True).path
    result = Reconstructor(model, resolution=16, complete=True).reconstruct(pixels)
    assert "completion" in result.timings
    assert "completion" not in Reconstructor(model, resolution=16).reconstruct(pixels).timings
