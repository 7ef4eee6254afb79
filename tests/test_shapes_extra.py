"""The extended procedural families: every family meshes watertight inside the unit box, has the parts
its parameters ask for (legs and spokes counted as connected components of a horizontal slice, a round
top's outline at constant radius, an oval's axis ratio), and the pipeline's SDF sign agrees with
trimesh's ray-parity ``contains``."""

import numpy as np
import pytest

from d2im_tf.data.synth import mesh_sdf, shapes
from d2im_tf.data.synth import shapes_extra as sx
from d2im_tf.errors import UserError

RESOLUTION = 128
FAMILIES = [(category, name) for category, families in sx.EXTRA_FAMILIES.items() for name in families]


def _mesh(parts):
    return shapes.mesh_parts(parts, RESOLUTION)


def _to_world(mesh, family_point):
    centre, scale = mesh.metadata["family_frame"]
    return (np.asarray(family_point, float) - centre) * scale


def _slice_loops(mesh, family_point, normal=(0, 1, 0)) -> list:
    """The closed outlines (``[K, 3]`` world points each) of the mesh's section by the plane through
    ``family_point`` with ``normal``: one per solid region (the parts checked here have no holes)."""
    section = mesh.section(plane_origin=_to_world(mesh, family_point), plane_normal=normal)
    return [] if section is None else list(section.discrete)


def _slice_regions(mesh, family_y) -> list:
    return _slice_loops(mesh, [0.0, family_y, 0.0])


@pytest.mark.parametrize("category,name", FAMILIES)
def test_every_family_is_watertight_inside_the_unit_box_and_signs_agree(category, name):
    rng = np.random.default_rng(5)
    mesh = _mesh(sx.EXTRA_FAMILIES[category][name](rng))
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert np.all(np.abs(mesh.vertices) <= 0.5)
    np.testing.assert_allclose(np.linalg.norm(np.ptp(mesh.vertices, axis=0)), shapes.WORLD_DIAGONAL, rtol=1e-3)
    samples = mesh_sdf.sample_sdf(mesh, np.random.default_rng(0), 400, with_density=False, far_count=0)
    world = samples.points * samples.norm_params[3] + samples.norm_params[:3]
    clear = np.abs(samples.sdf) > 0.004  # off the surface, where ray parity is unambiguous
    inside = mesh.contains(world[clear])
    assert np.mean(inside == (samples.sdf[clear] < 0)) > 0.99
    assert 0.2 < np.mean(inside) < 0.8  # the banded samples straddle the surface


@pytest.mark.parametrize("spokes", [4, 5])
def test_swivel_chair_stands_on_one_caster_per_spoke(spokes):
    parts = sx.swivel(0.5, 0.45, 0.47, 0.5, 0.3, spokes)
    mesh = _mesh(parts)
    assert len(_slice_regions(mesh, 0.02)) == spokes  # the casters (radius 0.025 from y = 0)
    assert len(_slice_regions(mesh, 0.25)) == 1  # the column


@pytest.mark.parametrize("legs", [3, 4])
def test_round_table_has_its_legs_and_a_round_top(legs):
    mesh = _mesh(sx.round_table(0.5, 0.7, 0.04, "legs", legs, splay=0.05))
    assert len(_slice_regions(mesh, 0.3)) == legs
    (top,) = _slice_regions(mesh, 0.68)
    outline = top[:, [0, 2]]
    radii = np.linalg.norm(outline - outline.mean(axis=0), axis=1)
    assert radii.std() / radii.mean() < 0.01
    _, scale = mesh.metadata["family_frame"]
    np.testing.assert_allclose(radii.mean(), 0.5 * scale, rtol=0.02)


def test_oval_table_top_has_the_asked_axis_ratio():
    mesh = _mesh(sx.round_table(0.6, 0.7, 0.04, "pedestal", oval=0.6))
    (top,) = _slice_regions(mesh, 0.68)
    width, depth = np.ptp(top[:, [0, 2]], axis=0)
    np.testing.assert_allclose(depth / width, 0.6, rtol=0.02)


def test_chairs_have_four_legs_and_a_cantilever_two_front_tubes():
    assert len(_slice_regions(_mesh(sx.turned_chair(0.48, 0.45, 0.45, 0.5, 0.02, 0.04)), 0.2)) == 4
    assert len(_slice_regions(_mesh(sx.shell_chair(0.5, 0.5, 0.45, 0.45)), 0.15)) == 4
    assert len(_slice_regions(_mesh(sx.upholstered(0.8, 0.85, 0.42, 0.45, 0.18, 0.65, leg_h=0.08)), 0.04)) == 4
    assert len(_slice_regions(_mesh(sx.cantilever(0.48, 0.48, 0.45, 0.45, 0.014)), 0.25)) == 2
    assert len(_slice_regions(_mesh(sx.trestle_table(1.4, 0.7, 0.72)), 0.2)) == 2


@pytest.mark.parametrize("apron", [0.0, 0.06])
def test_slender_table_stands_on_four_thin_legs_at_its_corners(apron):
    width, depth, leg, inset = 1.6, 0.7, 0.015, 0.02
    mesh = _mesh(sx.slender_table(width, depth, 0.74, 0.03, leg, inset, apron))
    _, scale = mesh.metadata["family_frame"]
    legs = _slice_regions(mesh, 0.3)
    assert len(legs) == 4
    half = np.array([width / 2, depth / 2]) - inset - leg  # the legs' axes, in the family's units
    corners = np.array([[sx_, sz] for sx_ in (-1, 1) for sz in (-1, 1)]) * half
    centre, _ = mesh.metadata["family_frame"]
    for outline in legs:
        across = outline[:, [0, 2]] / scale + centre[[0, 2]]  # back in the family's units
        middle = (across.max(axis=0) + across.min(axis=0)) / 2
        assert np.linalg.norm(corners - middle, axis=1).min() < 0.01  # at a corner, inset as asked
        assert np.ptp(across, axis=0).max() < 2 * leg + 0.02  # as thin as asked (the grid's cell: 0.016)


def test_a_family_asked_for_by_name_must_be_one_of_the_category():
    parts = sx.named_family_parts("slender", "04379243", np.random.default_rng(0))
    assert len(_slice_regions(_mesh(parts), 0.3)) == 4
    with pytest.raises(UserError, match="slender: no 03001627 shapes of that family; 03001627: armchair, "):
        sx.named_family_parts("slender", "03001627", np.random.default_rng(0))


def test_the_extended_mix_does_not_draw_a_family_added_later(monkeypatch):
    """``extended`` draws the tables' families of its frozen mix, never slender (asked for by name): a
    dataset made with ``extended`` is rebuilt as it was."""
    drawn = []
    for name in sx.EXTRA_FAMILIES["04379243"]:
        monkeypatch.setitem(sx.EXTRA_FAMILIES["04379243"], name, lambda rng, name=name: drawn.append(name) or [])
    for seed in range(200):
        sx.random_parts("04379243", np.random.default_rng(seed))
    assert set(drawn) == {"oval", "round", "trestle"}


def test_cabinet_fronts_carry_one_bar_handle_each():
    columns, drawers = 2, 2
    mesh = _mesh(sx.door_cabinet(0.8, 1.0, 0.45, columns, drawers, "bar", legs=True))
    # the bars stand 0.03 in front of the fronts: a vertical section there cuts only the handles
    regions = _slice_loops(mesh, [0.0, 0.5, 0.45 / 2 + 0.005 + 0.03], normal=(0, 0, 1))
    assert len(regions) == columns + drawers


def test_lathe_sdf_is_exact_on_a_cylinder_and_signs_right_on_a_taper():
    leg = sx.lathe([0, 0, 0], [0, 1, 0], [0.1, 0.1])
    points = np.array([[0.3, 0.5, 0.0], [0.0, 0.5, 0.05], [0.0, 1.2, 0.0], [0.3, 1.4, 0.0]])
    np.testing.assert_allclose(leg.sdf(points), [0.2, -0.05, 0.2, np.hypot(0.2, 0.4)], atol=1e-12)
    taper = sx.lathe([0, 0, 0], [0, 1, 0], [0.2, 0.1])
    rng = np.random.default_rng(0)
    points = rng.uniform([-0.3, -0.1, -0.3], [0.3, 1.1, 0.3], (2000, 3))
    radius = 0.2 - 0.1 * points[:, 1]
    inside = (np.hypot(points[:, 0], points[:, 2]) < radius) & (points[:, 1] > 0) & (points[:, 1] < 1)
    np.testing.assert_array_equal(taper.sdf(points) < 0, inside)


def test_extended_choice_keeps_the_classic_families_for_a_share():
    names = [sx.random_parts("03001627", np.random.default_rng(seed)) for seed in range(40)]
    classic = sum(all(isinstance(p, shapes.Part) for p in parts) for parts in names)
    assert 5 < classic < 30  # CLASSIC_SHARE = 0.4 of 40 (some extra families use only slabs too)
