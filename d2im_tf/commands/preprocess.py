"""``d2im preprocess ROOT``: add ``pc_gradients`` and ``density`` to every ``ori_sample.h5`` lacking them.

Real DISN downloads have neither. Gradients come from a least-squares plane through the SDF of each
sample's 10 nearest samples (as the reference), densities count same-sign samples within 0.025 world
units. Other datasets of a file are kept; each file is rewritten atomically.
"""

from __future__ import annotations

from tqdm import tqdm

from d2im_tf.data.disn_format import DatasetLayout
from d2im_tf.data.synth.mesh_sdf import add_fields_to_file
from d2im_tf.errors import UserError


def configure(parser) -> None:
    parser.add_argument("root", help="dataset root holding SDF_v1/<category>/<shape>/ori_sample.h5")
    parser.add_argument("--force", action="store_true", help="recompute files that already have both fields")


def run(args) -> int:
    root = DatasetLayout(args.root).root
    files = sorted(root.glob("SDF_v1/*/*/ori_sample.h5"))
    if not files:
        raise UserError(f"{root}: no SDF_v1/<category>/<shape>/ori_sample.h5 files")
    changed = sum(add_fields_to_file(path, args.force) for path in tqdm(files, desc="preprocess", unit="file"))
    print(f"updated {changed} of {len(files)} files")
    return 0
