"""Fused fields composed from several images' encodings, through an exported SavedModel's signatures.

D²IM-Net's field is ``f(p) = f_B(p) + D(u(p))``, D the front or back displacement map read at the
point's projection, chosen by the front/back test on f_B (:mod:`d2im_tf.models.d2im`). The export
exposes its pieces (:mod:`d2im_tf.deploy.export`): ``encode`` (image → global code, maps, features),
``decode_bounds`` (f_B at points and both maps read at the points' projections through a given camera,
by the model's own B-spline) and ``fuse`` (f_B + the displacement the test chooses, the test run on
the given encoding's base field). An application keeps the *target*'s f_B and its front/back test and
replaces the displacements ``[N, 2]`` handed to ``fuse``: read from another image's maps
(``decode_bounds`` of that image's encoding at other points, through another camera), or masked.
Where nothing is replaced the values are bit for bit those of the target's own reconstruction.

:class:`FieldModel` wraps a loaded :class:`~d2im_tf.inference.reconstruct.Reconstructor`; a
:class:`Composition` says how the displacements change; :meth:`FieldModel.extract` meshes the result
with the coarse-to-fine extraction of :func:`~d2im_tf.inference.extraction.extract_fused_mesh`,
certified with the range of every map involved. Only models working in the normalised frame are
accepted (an imported reference model has a world frame and bilinear maps; not supported).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf
import trimesh

from d2im_tf.errors import UserError
from d2im_tf.geometry import frames
from d2im_tf.inference.extraction import extract_fused_mesh, sdf_grid_points
from d2im_tf.inference.reconstruct import FRAME_BOUNDS, Reconstructor

BOX_RESOLUTION = 32  # grid cells per side of the coarse shape's bounding-box search


class EncodedImage(NamedTuple):
    """One image through ``encode`` and a camera: ``image`` ``[S, S, 3]`` (the network's input),
    ``encoding`` (``encode``'s outputs, batch 1), ``projection`` ``[1, 3, 4]`` (normalised frame → pixels),
    ``view`` (the metadata row the mesh is seen from), ``maps`` ``[S, S, 2]`` (front, back) and
    ``transform`` ``[3, 3]``, the affine of the image file's pixels to ``image``'s."""

    image: np.ndarray
    encoding: dict
    projection: tf.Tensor
    view: np.ndarray
    maps: np.ndarray
    transform: np.ndarray


class Composition:
    """The target's displacements changed: :meth:`displacements` maps (points ``[N, 3]``, the target's
    own displacements ``[N, 2]``) to the ones fused with the target's f_B; :attr:`maps` lists every
    ``[S, S, 2]`` map they may be read from (the extraction's certification needs their range)."""

    maps: list

    def displacements(self, points: np.ndarray, own: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class FieldModel:
    """A SavedModel's signatures as field pieces (module docstring)."""

    def __init__(self, reconstructor: Reconstructor):
        if reconstructor.frame != "normalised":
            raise UserError(
                f"{reconstructor.model_dir}: works in the {reconstructor.frame} frame (weights imported "
                "from the authors' release); transfer and paste need a model of this project "
                "(normalised frame)"
            )
        missing = [name for name in ("decode_bounds", "fuse") if name not in reconstructor.model.signatures]
        if missing:
            raise UserError(f"{reconstructor.model_dir}: has no {' or '.join(missing)} signature; export it again")
        # one reading per image: a mirrored one's field lives in the reflected frame, which compositions do not follow
        self.reconstructor = reconstructor.with_mirroring(False)
        self.signatures = reconstructor.model.signatures
        self.image_size = reconstructor.image_size

    def encode(self, pixels: np.ndarray, camera_row=None, norm_params=None) -> EncodedImage:
        """Encode a uint8 image (any size) as :meth:`Reconstructor.encode_input
        <d2im_tf.inference.reconstruct.Reconstructor.encode_input>` does for a reconstruction (matted,
        re-framed, its camera given or predicted and fitted), so an application's target looks the same
        as its own reconstruction."""
        encoded = self.reconstructor.encode_input(pixels, camera_row, norm_params)
        return EncodedImage(
            encoded.prepared.image,
            encoded.encoding,
            tf.cast(encoded.projection, tf.float32),
            np.asarray(encoded.view, float),
            encoded.encoding["maps"][0].numpy(),
            encoded.prepared.transform,
        )

    def bounds(self, encoded: EncodedImage, points: np.ndarray, projection=None):
        """f_B ``[N]`` of ``encoded`` at ``points`` ``[N, 3]`` and its maps ``[N, 2]`` read at the points'
        projections through ``projection`` ``[1, 3, 4]`` (default the image's own camera)."""
        projection = encoded.projection if projection is None else tf.constant(projection, tf.float32)
        out = self.signatures["decode_bounds"](
            points=tf.constant(np.asarray(points, np.float32)[None]), projection=projection, **encoded.encoding
        )
        return out["base"].numpy()[0], out["displacements"].numpy()[0]

    def fuse(self, encoded: EncodedImage, points: np.ndarray, base: np.ndarray, displacements: np.ndarray):
        """The fused field ``[N]``: ``base`` plus the displacement ``[N, 2]`` column that ``encoded``'s
        front/back test chooses at ``points``."""
        out = self.signatures["fuse"](
            points=tf.constant(np.asarray(points, np.float32)[None]),
            projection=encoded.projection,
            base=tf.constant(base[None], tf.float32),
            displacements=tf.constant(displacements[None], tf.float32),
            **encoded.encoding,
        )
        return out["sdf"].numpy()[0]

    def composed_bounds(self, target: EncodedImage, composition: Composition | None, points: np.ndarray):
        """f_B ``[N]`` of the target and the composed displacements ``[N, 2]`` at ``points``."""
        base, own = self.bounds(target, points)
        return base, (own if composition is None else composition.displacements(points, own))

    def field(self, target: EncodedImage, composition: Composition | None, points: np.ndarray) -> np.ndarray:
        """The composed fused field ``[N]`` at ``points`` ``[N, 3]`` (the target's own with ``composition``
        None)."""
        points = np.asarray(points, np.float32)
        base, displacements = self.composed_bounds(target, composition, points)
        return self.fuse(target, points, base, displacements)

    def coarse_box(self, encoded: EncodedImage, resolution: int = BOX_RESOLUTION) -> np.ndarray:
        """The axis-aligned box ``[2, 3]`` (lower, upper) of the coarse shape f_B < 0, from the cell centres
        of a ``resolution³`` grid over the normalised box, widened by half a cell."""
        points = sdf_grid_points(resolution, frames.NORMALISED_BOX).astype(np.float32)
        base = np.concatenate([self.bounds(encoded, chunk)[0] for chunk in np.array_split(points, 8)])
        inside = points[base < 0]
        if len(inside) == 0:
            raise UserError(
                "the model's coarse shape of an input is empty (f_B ≥ 0 everywhere in the box); "
                "is the object visible in the image?"
            )
        half = 0.5 * frames.box_side(frames.NORMALISED_BOX) / resolution
        return np.stack([inside.min(axis=0) - half, inside.max(axis=0) + half])

    def extract(self, target: EncodedImage, composition: Composition | None = None) -> trimesh.Trimesh:
        """The zero level set of the composed field, with the reconstructor's extraction settings."""
        rec = self.reconstructor
        maps = [target.maps] + ([] if composition is None else list(composition.maps))
        all_maps = np.concatenate(maps, axis=-1)  # [S, S, 2k]: their joint range certifies the cells

        def decode_bounds(points):
            return self.composed_bounds(target, composition, points)

        def fuse(points, base, displacements):
            return self.fuse(target, points, base, displacements)

        def decode(points):
            base, displacements = decode_bounds(points)
            return fuse(points, base, displacements), base

        mesh, _ = extract_fused_mesh(
            decode,
            all_maps,
            rec.resolution,
            rec.lipschitz,
            FRAME_BOUNDS[rec.frame],
            decode_bounds,
            fuse,
            mode=rec.mode,
            initial_resolution=rec.initial_resolution,
            batch_points=rec.batch_points,
            fill_cavities=rec.fill_cavities,
            bridging=rec.bridging,
        )
        return mesh
