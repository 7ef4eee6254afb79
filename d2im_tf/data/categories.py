"""ShapeNet category ids the project names: the synthetic families, the default training set, the
categories the reference evaluates from the side.

Light on purpose (no NumPy): the configuration's defaults and the command line read it.
"""

from __future__ import annotations

CHAIR, TABLE, CABINET, SOFA = "03001627", "04379243", "02933112", "04256520"
CAR, RIFLE, WATERCRAFT = "02958343", "04090263", "04530566"

# The four procedural families of the synthetic generator (d2im_tf.data.synth.shapes), in this order:
# what `d2im make-data` writes and what a config trains on unless it says otherwise.
CATEGORY_NAMES = {CHAIR: "chair", TABLE: "table", CABINET: "cabinet", SOFA: "sofa"}
SYNTHETIC_CATEGORIES = tuple(CATEGORY_NAMES)

# Thin objects seen badly from the usual test view; the reference evaluates them from view 6.
SIDE_VIEW_CATEGORIES = frozenset({CAR, RIFLE, WATERCRAFT})


def category_id(value) -> str:
    """A category id as text: ShapeNet's are 8-digit WordNet offsets, so a number (``3001627``, as YAML
    reads an id written without quotes) gets its leading zeros back."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**8:
        return f"{value:08d}"
    return value
