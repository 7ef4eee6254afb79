"""``d2im reconstruct``: images → meshes (+ preview strips) with an exported SavedModel.

Also ``tools/reconstruct.py``. Writes ``OUT/<image stem>.<format>``, ``OUT/<stem>_camera.json`` (the
3×4 projection from the mesh's frame to the input image's pixels) and ``OUT/<stem>_preview.png``
(see :mod:`d2im_tf.inference.reconstruct` for how images are prepared and which frame the mesh is in); the
model defaults to the bundled one (:data:`d2im_tf.bundled.BUNDLED_MODEL`, package data). The arguments are
checked before anything is written. An image that cannot be read is reported on one line and skipped (exit code 2);
one unlike the training renders is reconstructed with a warning.
"""

from __future__ import annotations

from pathlib import Path

from d2im_tf.bundled import BUNDLED_MODEL

FORMATS = ("obj", "ply", "glb")


def model_argument(parser) -> None:
    """``--model``, defaulting to the bundled model (shared with ``d2im evaluate``)."""
    parser.add_argument(
        "--model",
        default=str(BUNDLED_MODEL),
        help="SavedModel folder: saved_models/<name> (latest version) or saved_models/<name>/<version> "
        f"(default: the bundled model, {BUNDLED_MODEL})",
    )


def surface_cleanup_arguments(parser) -> None:
    """``--keep-cavities`` and ``--keep-gaps`` (shared with ``d2im evaluate``)."""
    parser.add_argument(
        "--keep-cavities",
        action="store_true",
        help="keep the surfaces of closed pockets inside the object, as the paper's extraction "
        "does (default: fill them; the training shapes have none)",
    )
    parser.add_argument(
        "--keep-gaps",
        action="store_true",
        help="leave apart the parts the field separates by a hair, as the paper's extraction does "
        "(default: bridge such gaps, e.g. a leg stopping just short of the table top)",
    )


def surface_cleanup_options(args) -> dict:
    """The :class:`~d2im_tf.inference.reconstruct.Reconstructor` options of :func:`surface_cleanup_arguments`."""
    return dict(fill_cavities=not args.keep_cavities, bridge_gaps=not args.keep_gaps)


def extraction_arguments(parser) -> None:
    """``--resolution``, ``--mode``, ``--keep-cavities`` and ``--keep-gaps`` of a command that extracts
    meshes (shared with ``d2im transfer`` and ``d2im paste``)."""
    parser.add_argument("--resolution", type=int, default=128, help="marching-cubes grid resolution (default 128)")
    parser.add_argument(
        "--mode",
        choices=("coarse_to_fine", "dense"),
        default="coarse_to_fine",
        help="SDF evaluation: coarse_to_fine (default, same mesh, fewer evaluations) or dense",
    )
    surface_cleanup_arguments(parser)


def input_arguments(parser, object_size_default: str = "auto", default_text: str = "auto", completion: bool = True):
    """``--no-matting``, ``--object-size``, ``--pose-fit`` and (``completion``) ``--mirror`` and
    ``--completion`` (shared with ``d2im evaluate``, and without the last two with the applications, whose
    fields are composed)."""
    parser.add_argument(
        "--no-matting",
        action="store_true",
        help="do not matte images without alpha on a background that is not plain white "
        "(default: GrabCut finds the object; docs/real_images.md)",
    )
    parser.add_argument(
        "--object-size",
        default=object_size_default,
        metavar="auto|off|F",
        help="re-frame the input so the object's box spans F of the side: auto uses the size the "
        f"model was trained on, off keeps the framing as given (default: {default_text})",
    )
    parser.add_argument(
        "--pose-fit",
        choices=("on", "off"),
        default="on",
        help="refine the camera network's pose so that the coarse shape's outline matches the input's "
        "foreground (docs/real_images.md; not with --camera; default: on)",
    )
    if not completion:
        return
    parser.add_argument(
        "--mirror",
        choices=("on", "off"),
        default="on",
        help="with a predicted camera, also read the input mirrored, and keep that reading when its coarse "
        "outline fits the foreground far better (docs/real_images.md; default: on)",
    )
    parser.add_argument(
        "--completion",
        choices=("on", "off"),
        default="off",
        help="lower the coarse shape along foreground rays that miss it, so thin parts such as legs appear; "
        "better outlines, slightly lower 3D precision (docs/real_images.md; default: off)",
    )


def input_options(args, object_size="auto") -> dict:
    """The :class:`~d2im_tf.inference.reconstruct.Reconstructor` arguments of :func:`input_arguments`'
    options; ``object_size`` where ``--object-size`` is not given (checked before the model loads)."""
    return dict(
        matting=not args.no_matting,
        object_size=object_size_option(args.object_size) if args.object_size else object_size,
        fit_pose=args.pose_fit == "on",
        complete=getattr(args, "completion", "off") == "on",
        try_mirrored=getattr(args, "mirror", "off") == "on",
    )


def object_size_option(text: str):
    """``--object-size``: "auto", "off" (None) or a number in (0, 1]."""
    from d2im_tf.errors import UserError

    if text in ("auto", "off"):
        return None if text == "off" else "auto"
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--object-size: expected auto, off or a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise UserError(f"--object-size: expected a number in (0, 1], got {text}")
    return value


def configure(parser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG files (RGB, RGBA or grey, any size)")
    model_argument(parser)
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument(
        "--camera",
        default=None,
        metavar="METADATA_LINE",
        help="the view as a rendering_metadata.txt line, "
        'e.g. "[30, 20, 0, 0.8, 35, 32, 1.75, 0, 0, 0]" '
        "(default: the model's camera network)",
    )
    parser.add_argument(
        "--norm-params",
        type=float,
        nargs=4,
        default=None,
        metavar=("CX", "CY", "CZ", "M"),
        help="with --camera: the shape's normalisation (world = xyz·m + c); the mesh is then in "
        "the world frame (default 0 0 0 1)",
    )
    extraction_arguments(parser)
    input_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="obj", help="mesh file format (default obj)")
    parser.add_argument("--no-preview", action="store_true", help="do not write the preview PNGs")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace meshes and previews of the same names already in the output folder (refused without it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--runtime",
        choices=("savedmodel", "tflite", "tfjs"),
        default="savedmodel",
        help="what evaluates the networks: the SavedModel (default), or with --model a folder "
        "written by 'd2im convert', LiteRT (tflite) or TF.js in Node (tfjs)",
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "float16"),
        default="float32",
        help="with --runtime tflite: the float32 models (default) or those with float16 weights",
    )


def parse_camera_line(text: str):
    """``--camera``: one metadata line ``[az, el, 0, d, 35, 32, 1.75, sx, sy, sz]`` → ``[10]``."""
    from d2im_tf.data.disn_format import MetadataLineError, metadata_row_problem, parse_metadata_line
    from d2im_tf.errors import UserError

    try:
        row = parse_metadata_line(text)
        if row is None:  # a blank line
            raise MetadataLineError(metadata_row_problem([]), numbers=True)
    except MetadataLineError as error:
        if not error.numbers:
            raise UserError(f"--camera: not a list of numbers: {text!r}") from None
        raise UserError(f"--camera: the line {error} (a rendering_metadata.txt line is expected)") from None
    return row


def check_norm_params(values) -> None:
    """``--norm-params CX CY CZ M``: finite, with a positive scale."""
    import math

    from d2im_tf.errors import UserError

    if not all(math.isfinite(v) for v in values):
        raise UserError(f"--norm-params: expected 4 finite numbers, got {' '.join(map(str, values))}")
    if values[3] <= 0:
        raise UserError(f"--norm-params: the scale m must be positive, got {values[3]}")


def output_names(images, out: Path, mesh_format: str) -> dict:
    """``{image: OUT/<stem>.<format>}``; :class:`UserError` if two images would write the same file."""
    from d2im_tf.errors import UserError

    names, seen = {}, {}
    for path in images:
        target = out / f"{Path(path).stem}.{mesh_format}"
        if target in seen:
            raise UserError(
                f"{path} and {seen[target]} would both be written to {target}; reconstruct them "
                "into different folders or rename one"
            )
        seen[target] = path
        names[path] = target
    return names


def check_no_earlier_results(targets: dict, previews: bool, overwrite: bool) -> None:
    """:class:`UserError` naming the first mesh or preview an earlier run left at a path this one would
    write, unless ``overwrite``: a command changes nothing that was there before unless told to."""
    from d2im_tf.errors import UserError

    if overwrite:
        return
    for target in targets.values():
        for path in (target, *([target.with_name(f"{target.stem}_preview.png")] if previews else [])):
            if path.exists():
                raise UserError(
                    f"{path}: already exists (an earlier result?); pass --overwrite to replace it "
                    "or choose another output folder"
                )


def run(args) -> int:
    from d2im_tf.errors import UserError
    from d2im_tf.io import check_output_dir, new_folders

    if args.norm_params is not None:
        if args.camera is None:
            raise UserError("--norm-params needs --camera (a predicted camera gives the normalised frame)")
        check_norm_params(args.norm_params)
    camera_row = parse_camera_line(args.camera) if args.camera is not None else None
    inputs = input_options(args)
    out = check_output_dir(args.out)
    targets = output_names(args.images, out, args.format)
    check_no_earlier_results(targets, not args.no_preview, args.overwrite)

    from d2im_tf.inference.reconstruct import Reconstructor, reconstruct_files

    options = dict(
        resolution=args.resolution,
        mode=args.mode,
        **surface_cleanup_options(args),
        **inputs,
    )
    if args.runtime == "savedmodel":
        reconstructor = Reconstructor(args.model, **options)
    else:  # the same extraction, the networks run by LiteRT or TF.js (d2im_tf.deploy.runtimes)
        from d2im_tf.deploy.runtimes import runtime_reconstructor

        reconstructor = runtime_reconstructor(args.model, args.runtime, args.precision, **options)
    reconstructor.require_camera(camera_row)  # before the progress bar starts
    with new_folders(out):  # a failure (a full disk) leaves no empty output folder behind
        failed = reconstruct_files(
            reconstructor,
            targets,
            camera_row,
            args.norm_params,
            args.format,
            previews=not args.no_preview,
            progress=not args.no_progress,
        )
    done = len(args.images) - failed
    print(f"{done} of {len(args.images)} images reconstructed into {out}")
    return 2 if failed else 0
