"""The preview's side view: turned by 90° of azimuth, and with a mesh, framed so that the mesh's
bounding sphere spans the panel's share it names (checked on a rendered sphere, whose silhouette width
follows from its radius and the camera's distance)."""

import numpy as np
import pytest
import trimesh

from d2im_tf.data.render import Renderer
from d2im_tf.inference.preview import SIDE_FILL, side_view


def test_side_view_turns_the_azimuth_and_keeps_the_distance_without_a_mesh():
    view = [30.0, 20.0, 0.0, 0.9, 25.0]
    np.testing.assert_array_equal(side_view(view), [120.0, 20.0, 0.0, 0.9, 25.0])


@pytest.mark.parametrize("radius", [0.3, 1.0])
def test_a_fitted_side_view_makes_the_sphere_span_its_share_of_the_panel(radius):
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    view = side_view([30.0, 20.0, 0.0, 0.9], sphere)
    assert view[0] == 120.0 and view[1] == 20.0
    mask = Renderer(sphere).render(view, 224).mask
    columns = np.nonzero(mask.any(axis=0))[0]
    rows = np.nonzero(mask.any(axis=1))[0]
    for extent in (columns.max() - columns.min() + 1, rows.max() - rows.min() + 1):
        assert extent == pytest.approx(SIDE_FILL * 224, abs=3)
