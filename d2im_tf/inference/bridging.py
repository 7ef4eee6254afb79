"""Gap bridging: join the parts of an extracted surface that the field leaves apart by a hair.

A learned field often leaves a thin part (a table leg, a chair's stretcher) almost touching the rest:
between the leg's top and the table top the field rises to a small positive value, far below what it
reaches between two real parts, and marching cubes returns a floating leg. Bridging looks, on the
SDF grid before marching cubes, at each inside region (negative nodes, 6-connected) apart from the
largest one. When the largest region lies within ``max_gap`` of it, the *corridor* between the two is
the set of nodes whose distances to both add up to at most the gap plus ``slack_cells``; there the
surface is taken at the field's ``level`` instead of 0 (those corridor nodes with ``0 ≤ f < level``
are lowered by ``level``). The bridge is kept only when it joins the two regions; the joined region
counts as part of the largest for the regions that follow, until a pass joins none.

So a part is joined only when the field's own ``level`` set joins it within a short, straight-ish
corridor: a part the field separates by more than ``level`` stays apart (nothing is invented), and
the surface moves nowhere but in the corridor, by at most the offset of the ``level`` set. Not in
the paper; ``d2im reconstruct --keep-gaps`` turns it off.

A grid whose values are only sign-correct away from the surface (coarse-to-fine's bounds, module
:mod:`d2im_tf.inference.extraction`) is made exact where bridging reads it, through ``settle``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

FACE_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)  # 6-connectivity: regions marching cubes keeps joined
ALL_NEIGHBOURS = np.ones((3, 3, 3), bool)
# The defaults of :class:`~d2im_tf.inference.reconstruct.Reconstructor`, as fractions of the box's side:
LEVEL_OF_SIDE = 0.005  # the level (a distance; times the model's SDF scale): 0.01 in the normalised frame
MAX_GAP_OF_SIDE = 1.0 / 16.0  # the widest gap bridged: 8 cells at 128³

# nodes 3 × [M] index arrays → None: make the grid's values exact there, in place
SettleFunction = Callable[[tuple[np.ndarray, ...]], None]


@dataclass(frozen=True)
class GapBridging:
    """Settings of :func:`bridge_gaps`: ``level`` in the field's units, ``max_gap`` in the grid's length
    units (the frame's), ``slack_cells`` how much longer than the gap a corridor's paths may be (cells)."""

    level: float
    max_gap: float
    slack_cells: float = 2.0

    @classmethod
    def for_box(cls, side: float, sdf_scale: float) -> "GapBridging":
        """The defaults for a box of ``side`` and a field in units of ``sdf_scale`` per length unit."""
        return cls(level=LEVEL_OF_SIDE * side * sdf_scale, max_gap=MAX_GAP_OF_SIDE * side)


def bridge_gaps(grid: np.ndarray, bridging: GapBridging, spacing: float, settle: SettleFunction | None = None) -> int:
    """Bridge, in place, the gaps of the SDF grid ``grid [R, R, R]`` (negative inside; nodes ``spacing``
    apart) that ``bridging`` allows (module docstring); returns how many bridges were made.

    ``settle``, if given, makes the grid's values exact at the nodes it is given: the outside nodes of
    each corridor and their neighbours, which decide the bridge and which marching cubes then reads."""
    max_cells = bridging.max_gap / spacing
    labels, count = ndimage.label(grid < 0, FACE_NEIGHBOURS)
    if count < 2:
        return 0
    sizes = np.bincount(labels.ravel())[1:]  # [count]
    joined = labels == sizes.argmax() + 1
    boxes = ndimage.find_objects(labels)
    waiting = [int(k) for k in np.argsort(-sizes) if k != sizes.argmax()]  # the rest, largest first
    bridges = 0
    while waiting:
        still_apart = []
        for k in waiting:
            part_box = boxes[k]
            if joined[part_box][labels[part_box] == k + 1].any():  # already merged by an earlier bridge
                continue
            if _join(grid, labels, k + 1, part_box, joined, bridging, max_cells, settle):
                bridges += 1
            else:
                still_apart.append(k)
        if len(still_apart) == len(waiting):
            break
        waiting = still_apart
    return bridges


def _join(grid, labels, label, part_box, joined, bridging: GapBridging, max_cells: float, settle) -> bool:
    """Bridge the region ``label`` (bounding box ``part_box``) to ``joined`` if its gap allows; updates
    ``grid`` and ``joined`` in place and returns whether it did."""
    margin = int(np.ceil(max_cells)) + 1
    box = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(part_box, grid.shape))
    part, rest = labels[box] == label, joined[box]
    if not rest.any():
        return False
    to_rest = ndimage.distance_transform_edt(~rest)  # [box] in cells
    gap = to_rest[part].min()
    if gap > max_cells:
        return False
    corridor = to_rest + ndimage.distance_transform_edt(~part) <= gap + bridging.slack_cells
    values = grid[box]  # a view: settling and lowering write through to the grid
    if settle is not None:  # the corridor's outside nodes and their neighbours: what the bridge reads
        near = ndimage.binary_dilation(corridor & (values >= 0), ALL_NEIGHBOURS)
        offsets = [s.start for s in box]
        settle(tuple(index + offset for index, offset in zip(np.nonzero(near), offsets)))
    lowered = corridor & (values >= 0) & (values < bridging.level)
    trial = values < 0
    trial |= lowered
    regions, _ = ndimage.label(trial, FACE_NEIGHBOURS)
    if not np.intersect1d(regions[part], regions[rest]).size:
        return False
    values[lowered] -= bridging.level
    joined[box] |= regions == regions[part][0]
    return True
