"""Detail transfer (paper §4.4, Figure 1): the target's coarse shape carrying the source's surface details.

For each point p the fused value is the target's ``f_B(p)`` plus the source's front or back
displacement map read at ``u_S(q)``, ``q = C_{T→S}(p)`` seen through the source's camera; the target's
front/back test chooses the map. The correspondence C maps boxes onto boxes, axis by axis:
``q = c_S + (p − c_T)·(e_S / e_T)`` (centres c, extents e). By default the boxes are the two coarse
shapes' bounding boxes (f_B < 0, :meth:`~d2im_tf.applications.fields.FieldModel.coarse_box`): the whole
object. With :class:`BoxPair` parts (e.g. the chair backs), only the points inside a target part take
the source's displacements, through that part pair's map; the others keep the target's own — the
paper's part-wise transfer with the parts given instead of segmented. ``where`` picks the maps
transferred: ``front``, ``back`` or ``both`` (the other keeps the target's). A point whose
corresponding point the source image shows on its white background (not on the object) keeps the
target's own displacements too (``source_mask``, on by default): the maps are not trained there, and
their values would move the target's outline (the paper crops a logo's maps by its mask likewise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from d2im_tf.applications.fields import Composition, EncodedImage, FieldModel
from d2im_tf.errors import UserError
from d2im_tf.geometry.camera import project_numpy

WHERE = {"front": (0,), "back": (1,), "both": (0, 1)}


@dataclass(frozen=True)
class BoxPair:
    """A target box and the source box it maps onto, each ``[2, 3]`` (lower, upper), normalised frames."""

    target: np.ndarray
    source: np.ndarray

    @classmethod
    def from_numbers(cls, numbers) -> "BoxPair":
        """12 numbers: the target box's lower and upper corners, then the source box's."""
        values = np.asarray(numbers, float).reshape(2, 2, 3)
        for name, box in zip(("target", "source"), values):
            if not np.all(np.isfinite(box)) or np.any(box[1] <= box[0]):
                raise UserError(
                    f"--part: the {name} box {box[0].tolist()} – {box[1].tolist()} needs finite "
                    "corners with lower < upper on every axis"
                )
        return cls(values[0], values[1])

    def inside(self, points: np.ndarray) -> np.ndarray:
        """Which target points ``[N, 3]`` lie in the target box, ``[N]`` bool."""
        return np.all((points >= self.target[0]) & (points <= self.target[1]), axis=1)

    def map(self, points: np.ndarray) -> np.ndarray:
        """q = C(p) ``[N, 3]``: each axis's position within the target box, the same within the source box."""
        scale = (self.source[1] - self.source[0]) / (self.target[1] - self.target[0])
        return (self.source[0] + self.source[1]) / 2 + (points - (self.target[0] + self.target[1]) / 2) * scale


class DetailTransfer(Composition):
    """The source's displacements at the corresponding points (module docstring)."""

    def __init__(
        self,
        model: FieldModel,
        source: EncodedImage,
        pairs: list[BoxPair],
        where: str = "both",
        whole_object: bool = True,
        source_mask: bool = True,
    ):
        self.model, self.source, self.pairs = model, source, pairs
        self.channels = list(WHERE[where])
        self.whole_object = whole_object  # every point takes the source's (one pair); else only inside parts
        self.maps = [source.maps]
        # [S, S] bool: the source image's object pixels; q seen elsewhere reads no detail of the source
        self.mask = image_foreground(source.image) if source_mask else None

    def on_source(self, q: np.ndarray) -> np.ndarray:
        """Which corresponding points ``[N, 3]`` the source image shows on its object, ``[N]`` bool."""
        if self.mask is None:
            return np.ones(len(q), bool)
        pixel = np.floor(project_numpy(q, self.source.projection.numpy())).astype(np.int64)  # [N, 2] (x, y)
        size = self.mask.shape[0]
        inside = np.all((pixel >= 0) & (pixel < size), axis=1)
        result = np.zeros(len(q), bool)
        result[inside] = self.mask[pixel[inside, 1], pixel[inside, 0]]
        return result

    def displacements(self, points: np.ndarray, own: np.ndarray) -> np.ndarray:
        out = own.copy()
        claimed = np.zeros(len(points), bool)
        for pair in self.pairs:
            chosen = ~claimed if self.whole_object else pair.inside(points) & ~claimed
            if not chosen.any():
                continue
            claimed |= chosen
            q = pair.map(points[chosen]).astype(np.float32)
            seen = self.on_source(q)
            chosen[chosen] = seen
            if seen.any():
                _, theirs = self.model.bounds(self.source, q[seen])
                out[np.ix_(chosen, self.channels)] = theirs[:, self.channels]
        return out


def image_foreground(image: np.ndarray, level: float = 0.94) -> np.ndarray:
    """The object's pixels ``[S, S]`` of a prepared image (float ``[S, S, 3]`` on white): not white."""
    return np.any(np.asarray(image) < level, axis=-1)


def whole_object_pair(model: FieldModel, source: EncodedImage, target: EncodedImage) -> BoxPair:
    """The target's coarse box mapped onto the source's."""
    return BoxPair(model.coarse_box(target), model.coarse_box(source))


def detail_transfer(
    model: FieldModel,
    source: EncodedImage,
    target: EncodedImage,
    where: str = "both",
    parts: list[BoxPair] | None = None,
    source_mask: bool = True,
) -> DetailTransfer:
    """The composition of a transfer: whole object by default, else the given part boxes."""
    if parts:
        return DetailTransfer(model, source, list(parts), where, whole_object=False, source_mask=source_mask)
    return DetailTransfer(model, source, [whole_object_pair(model, source, target)], where, source_mask=source_mask)


def transfer_images(
    model: FieldModel,
    source_pixels: np.ndarray,
    target_pixels: np.ndarray,
    where: str = "both",
    parts: list[BoxPair] | None = None,
    source_mask: bool = True,
    source_row=None,
    target_row=None,
):
    """Encode the source and the target (uint8 images; cameras given or predicted) and build the transfer:
    ``(source, target, composition)``; ``model.extract(target, composition)`` meshes it."""
    source = model.encode(source_pixels, source_row)
    target = model.encode(target_pixels, target_row)
    return source, target, detail_transfer(model, source, target, where, parts, source_mask)
