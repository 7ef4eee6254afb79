"""``d2im preprocess ROOT``: add ``pc_gradients`` and ``density`` to every ``ori_sample.h5`` lacking them.

Real DISN downloads have neither. Gradients come from a least-squares plane through the SDF of each
sample's 10 nearest samples (as the reference), densities count same-sign samples within 0.025 world
units. Other datasets of a file are kept; each file is rewritten atomically.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
from tqdm import tqdm

from d2im_tf.data.disn_format import DataError, DatasetLayout, atomic_path, read_samples
from d2im_tf.data.synth.mesh_sdf import add_gradients_and_density
from d2im_tf.errors import UserError


def configure(parser) -> None:
    parser.add_argument("root", help="dataset root holding SDF_v1/<category>/<shape>/ori_sample.h5")
    parser.add_argument("--force", action="store_true", help="recompute files that already have both fields")


def add_fields(path: Path, force: bool = False) -> bool:
    """Add the missing fields to one file; True if it was changed."""
    samples = read_samples(path)
    if samples.gradients is not None and samples.density is not None and not force:
        return False
    if force:
        samples.gradients, samples.density = None, None
    samples = add_gradients_and_density(samples)
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        try:
            with h5py.File(tmp, "r+") as h5:
                for name, array in (("pc_gradients", samples.gradients), ("density", samples.density)):
                    if name in h5:
                        del h5[name]
                    h5.create_dataset(name, data=array, track_times=False)
        except OSError as error:
            raise DataError(path, f"cannot update ({error})") from None
    return True


def run(args) -> int:
    root = DatasetLayout(args.root).root
    files = sorted(root.glob("SDF_v1/*/*/ori_sample.h5"))
    if not files:
        raise UserError(f"{root}: no SDF_v1/<category>/<shape>/ori_sample.h5 files")
    changed = sum(add_fields(path, args.force) for path in tqdm(files, desc="preprocess", unit="file"))
    print(f"updated {changed} of {len(files)} files")
    return 0
