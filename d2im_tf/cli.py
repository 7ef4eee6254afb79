"""d2im: single-view 3D reconstruction with surface details (D²IM-Net in TensorFlow / Keras).

One subcommand per module of :mod:`d2im_tf.commands`.

Subcommand modules are imported only when run, so ``d2im --help`` is fast and a subcommand's heavy
dependencies (TensorFlow, trimesh) load only when needed. Errors a user can fix (a bad file, a bad
config key) print one line and exit with code 2. TensorFlow's own log lines are hidden unless
``--verbose`` is given or ``TF_CPP_MIN_LOG_LEVEL`` is set (:mod:`d2im_tf.quiet`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name: (module under d2im_tf.commands, one-line help)
COMMANDS = {
    "info": ("info", "print versions of TF/Keras/NumPy and the resolved config"),
    "check-data": ("check_data", "validate a DISN-layout dataset and summarise it"),
    "train": ("train", "train the SDF network (D²IM-Net or an ablation variant), then export it"),
    "train-camera": ("train_camera", "train the camera network"),
    "export": ("export", "export a training run as a SavedModel (TF Serving layout)"),
    "convert": ("convert", "a SavedModel → TFLite (LiteRT) or TF.js models (encode, decode, camera) for clients"),
    "import-torch": ("import_torch", "the authors' PyTorch checkpoints (D²IM-Net, camera) as a SavedModel"),
    "make-data": ("make_data", "write a synthetic detail-rich dataset (or convert meshes) in DISN's layout"),
    "preprocess": ("preprocess", "add pc_gradients and density to a DISN dataset's ori_sample.h5 files"),
    "reconstruct": ("reconstruct", "images → meshes and preview strips with an exported SavedModel"),
    "transfer": ("transfer", "detail transfer: one image's surface details on another image's coarse shape"),
    "paste": ("paste", "paste-n-reconstruct: a logo dropped onto an image, reconstructed in relief"),
    "app": ("app", "a local web page and HTTP API: image → 3D mesh in the browser, GLB/OBJ/PLY downloads"),
    "evaluate": ("evaluate", "per-category metrics (IoU, Chamfer-L1, ECD-3D, ECD-2D, F-score) on a test split"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` subcommand's module is imported to declare its options."""
    parser = argparse.ArgumentParser(prog="d2im", description=__doc__.splitlines()[0].split(": ", 1)[1])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module)
        sub.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="show TensorFlow's own log messages (hidden by default; TF_CPP_MIN_LOG_LEVEL is honoured)",
        )
        if name == selected:
            importlib.import_module(f"d2im_tf.commands.{module}").configure(sub)
    return parser


def main(argv=None) -> int:
    from d2im_tf.errors import UserError, full_disk, wrapped_user_error
    from d2im_tf.quiet import quiet_tensorflow

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    quiet_tensorflow(args.verbose)  # before any subcommand imports TensorFlow
    module = importlib.import_module(f"d2im_tf.commands.{args._module}")
    try:
        return int(module.run(args) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a UserError raised inside a TensorFlow input pipeline comes back wrapped
        message = wrapped_user_error(error) or full_disk(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
