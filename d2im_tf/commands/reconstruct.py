"""``d2im reconstruct``: images → meshes (+ preview strips) with an exported SavedModel.

Also ``tools/reconstruct.py``. Writes ``OUT/<image stem>.<format>`` and ``OUT/<stem>_preview.png``
(see :mod:`d2im_tf.reconstruct` for how images are prepared and which frame the mesh is in). An
image that cannot be read is reported on one line and skipped; the exit code is then 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

FORMATS = ("obj", "ply", "glb")


def configure(parser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG files (RGB, RGBA or grey, any size)")
    parser.add_argument("--model", required=True,
                        help="SavedModel folder: saved_models/<name> (latest version) or saved_models/<name>/<version>")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--camera", default=None, metavar="METADATA_LINE",
                        help='the view as a rendering_metadata.txt line, e.g. "[30, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0]" '
                             "(default: the model's camera network)")
    parser.add_argument("--norm-params", type=float, nargs=4, default=None, metavar=("CX", "CY", "CZ", "M"),
                        help="with --camera: the shape's normalisation (world = xyz·m + c); the mesh is then in "
                             "the world frame (default 0 0 0 1)")
    parser.add_argument("--resolution", type=int, default=128, help="marching-cubes grid resolution (default 128)")
    parser.add_argument("--mode", choices=("coarse_to_fine", "dense"), default="coarse_to_fine",
                        help="SDF evaluation: coarse_to_fine (default, same mesh, fewer evaluations) or dense")
    parser.add_argument("--format", choices=FORMATS, default="obj", help="mesh file format (default obj)")
    parser.add_argument("--no-preview", action="store_true", help="do not write the preview PNGs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def parse_camera_line(text: str):
    """A metadata line ``[az, el, 0, d, 35, 32, 1.75, sx, sy, sz]`` (brackets, commas optional) → ``[10]``."""
    import numpy as np

    from d2im_tf.data.disn_format import METADATA_FIELDS
    from d2im_tf.errors import UserError

    fields = text.strip().strip("[]").replace(",", " ").split()
    try:
        row = np.array([float(field) for field in fields])
    except ValueError:
        raise UserError(f"--camera: not a list of numbers: {text!r}") from None
    if len(row) != METADATA_FIELDS or not np.all(np.isfinite(row)):
        raise UserError(f"--camera: expected {METADATA_FIELDS} finite numbers (a rendering_metadata.txt line), "
                        f"got {len(row)}")
    return row


def run(args) -> int:
    from tqdm import tqdm

    from d2im_tf.data.disn_format import atomic_path, read_image, write_png
    from d2im_tf.errors import UserError
    from d2im_tf.preview import preview_image
    from d2im_tf.reconstruct import Reconstructor

    if args.norm_params is not None and args.camera is None:
        raise UserError("--norm-params needs --camera (a predicted camera gives the normalised frame)")
    if args.norm_params is not None and args.norm_params[3] <= 0:
        raise UserError(f"--norm-params: the scale m must be positive, got {args.norm_params[3]}")
    camera_row = parse_camera_line(args.camera) if args.camera is not None else None
    reconstructor = Reconstructor(args.model, resolution=args.resolution, mode=args.mode)
    reconstructor.require_camera(camera_row)  # before the progress bar starts
    out = Path(args.out)
    failed = 0
    for path in tqdm(args.images, desc="reconstruct", unit="image", disable=args.no_progress, file=sys.stderr):
        try:
            pixels = read_image(path)
        except UserError as error:
            tqdm.write(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        result = reconstructor.reconstruct(pixels, camera_row, args.norm_params)
        stem = Path(path).stem
        if len(result.mesh.faces) == 0:
            tqdm.write(f"warning: {path}: the predicted SDF has no surface in the box; no mesh written",
                       file=sys.stderr)
        else:
            with atomic_path(out / f"{stem}.{args.format}") as tmp:
                result.mesh.export(tmp, file_type=args.format)
        if not args.no_preview:
            write_png(out / f"{stem}_preview.png", preview_image(result.image, result.mesh, result.view, result.maps))
    done = len(args.images) - failed
    print(f"{done} of {len(args.images)} images reconstructed into {out}")
    return 2 if failed else 0
