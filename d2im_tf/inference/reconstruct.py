"""Single-image reconstruction with an exported SavedModel: image → camera → SDF → mesh.

Only ``tf.saved_model.load`` and the export's signatures are used (:mod:`d2im_tf.inference.export`): the image
is encoded once (``encode``), then the SDF is decoded chunk by chunk (``decode``) on the grid of
:func:`d2im_tf.inference.extraction.extract_mesh`, coarse-to-fine by default.

Input images: any PNG/JPEG, RGB, RGBA or grey, any size. They are brought to what the network saw in
training — the dataset's renders: a square image of the model's ``image_size`` with the object
centred on a white background. RGBA is composited on white, grey becomes RGB, a non-square image is
padded with white to a centred square, then resized. A photo should therefore show the object
roughly centred on a plain white background; :func:`input_warnings` says when an input does not.

Models imported from the authors' release (``d2im.json``: ``"image_reading": "reference"``) saw DISN's
renders as the authors read them: the alpha channel dropped, so the transparent background reads
black. Their images are prepared the same way: alpha dropped, grey becomes RGB, padding in black, then
resized (a 224² render passes unchanged); the model itself reverses the channels to BGR.

Frames: the SDF network works in the shape's normalised frame. With the model's camera network the
predicted pose is that of the normalised frame (up to scale), so the mesh is in the normalised frame.
With a given camera (a ``rendering_metadata.txt`` row, world frame) and the shape's norm params
``(cx, cy, cz, m)`` (default 0 0 0 1), the projection is folded with the normalisation
(:func:`d2im_tf.geometry.frames.normalised_projection`) and the mesh is returned in the world
frame, ``xyz·m + c``. An imported model (``"frame": "world"``) works in the world frame throughout, as
the authors' code: a given camera is used as it is (the norm params are not needed), the camera network
predicts the world frame's pose, the grid covers the reference's box [-0.5, 0.5]³, and the mesh is in
the world frame either way (:attr:`Reconstruction.frame`).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import trimesh
from PIL import Image

from d2im_tf.data.disn_format import on_white
from d2im_tf.errors import UserError, size_text
from d2im_tf.geometry import camera, frames
from d2im_tf.inference.extraction import (
    BATCH_POINTS,
    INITIAL_RESOLUTION,
    extract_fused_mesh,
    grid_memory_bytes,
    levels_fit,
)
from d2im_tf.resources import machine_memory_bytes

WHITE = 255
BLACK = 0
FRAME_BOUNDS = {"normalised": frames.NORMALISED_BOX, "world": frames.WORLD_BOX}
MAX_RESOLUTION = 1024  # marching-cubes cells per side; 1024³ is already ~4 GB of float32 SDF values


def check_resolution(resolution: int, mode: str = "dense", initial_resolution: int = INITIAL_RESOLUTION) -> None:
    """:class:`UserError` unless ``resolution`` suits the extraction ``mode`` (see :class:`Reconstructor`)."""
    if not 2 <= resolution <= MAX_RESOLUTION:
        raise UserError(f"--resolution must be between 2 and {MAX_RESOLUTION}, got {resolution}")
    initial = min(initial_resolution, resolution)
    if mode == "coarse_to_fine" and not levels_fit(resolution, initial):
        raise UserError(f"--resolution {resolution}: coarse-to-fine needs {initial}·2^k "
                        "(e.g. 64, 128, 256), or use --mode dense")
    need, available = grid_memory_bytes(resolution, mode), machine_memory_bytes()
    if need > available:
        raise UserError(f"--resolution {resolution} --mode {mode}: the grid needs at least {size_text(need)} of "
                        f"memory, more than the {size_text(available)} this machine has; lower --resolution"
                        + (" or use --mode coarse_to_fine" if mode == "dense" else ""))


def input_warnings(image: np.ndarray) -> list[str]:
    """How a prepared image ``[S, S, 3]`` differs from the training renders (an object centred on a
    white background), as short phrases; empty if it looks like one. The model has not seen such
    inputs, so its mesh is unreliable for them."""
    size = image.shape[0]
    ring = max(1, size // 16)
    white = np.all(image >= 0.9, axis=-1)  # [S, S]
    border = np.concatenate([white[:ring].ravel(), white[-ring:].ravel(),
                             white[ring:-ring, :ring].ravel(), white[ring:-ring, -ring:].ravel()])
    if border.mean() < 0.9:
        return [f"only {border.mean():.0%} of its border is white background; the model was trained on "
                "objects centred on white (crop the object onto a white background)"]
    if white.all():
        return ["the image is blank (all white)"]
    rows, cols = np.nonzero(~white)
    offset = np.abs(np.array([rows.mean(), cols.mean()]) / size - 0.5).max()
    if offset > 0.2:
        return [f"the object is off-centre by {offset:.0%} of the image; the model was trained on centred objects"]
    return []


def resolve_model_dir(path) -> Path:
    """The SavedModel folder of ``path``: itself if it holds ``saved_model.pb``, else its largest
    integer version (TF Serving's layout ``saved_models/<name>/<version>/``)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: model folder not found" if not path.exists() else f"{path}: not a folder")
    if (path / "saved_model.pb").exists():
        return path
    versions = [p for p in path.glob("*") if p.name.isdigit() and (p / "saved_model.pb").exists()]
    if not versions:
        raise UserError(f"{path}: no SavedModel here (no saved_model.pb, no <version>/saved_model.pb)")
    return max(versions, key=lambda p: int(p.name))


def prepare_image(pixels: np.ndarray, image_size: int, reading: str = "white") -> np.ndarray:
    """Any uint8 image ``[H, W]``, ``[H, W, 1|3|4]`` → float32 ``[S, S, 3]`` in [0, 1] (module docstring).

    ``reading``: ``"white"`` composites RGBA on white and pads with white; ``"reference"`` drops the
    alpha channel and pads with black, as the authors' OpenCV reading of DISN's renders.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] in (1, 2):  # grey, grey + alpha
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=-1), pixels[..., 1:]], axis=-1)
    rgb = pixels[..., :3].astype(np.float64)  # [H, W, 3]
    background = BLACK if reading == "reference" else WHITE
    if pixels.shape[-1] == 4 and reading != "reference":
        rgb = on_white(pixels)
    height, width = rgb.shape[:2]
    side = max(height, width)
    square = np.full((side, side, 3), float(background))
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = rgb
    image = Image.fromarray(np.round(square).astype(np.uint8)).resize((image_size, image_size), Image.LANCZOS)
    return np.asarray(image, dtype=np.float32) / 255.0


def view_row_from_pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """A metadata row ``[az, el, 0, d, 35, 32, 1.75, 0, 0, 0]`` for a pose ``[R | t]`` (frame → camera).

    The camera centre ``−Rᵀt`` lies at ``1.75·d·(cos el cos az, sin el, cos el sin az)``. The row
    assumes, as DISN's renders, a camera looking at the origin without roll; a predicted pose's
    deviation from that is dropped. Used to render a predicted view.
    """
    centre = camera.camera_centre(np.asarray(rotation, float), np.asarray(translation, float))  # [3]
    distance = float(np.linalg.norm(centre))
    azimuth = np.degrees(np.arctan2(centre[2], centre[0]))
    elevation = np.degrees(np.arcsin(np.clip(centre[1] / max(distance, 1e-12), -1.0, 1.0)))
    return np.array([azimuth, elevation, 0.0, distance / camera.MAX_DISTANCE,
                     camera.FOCAL_MM, camera.SENSOR_MM, camera.MAX_DISTANCE, 0.0, 0.0, 0.0])


class Reconstruction(NamedTuple):
    """One reconstruction: the first three fields are ``(mesh, maps, timings)``.

    ``mesh`` in the world frame for a given camera, else the normalised frame (always the world frame
    for a model that works in it), as ``frame`` says; ``maps`` float32
    ``[S, S, 2]`` (front, back displacement maps, SDF units); ``timings`` seconds per stage
    (``encode``, ``camera``, ``sdf_evaluation``, ``marching_cubes``); ``view`` the metadata row the
    mesh is seen from in the input (in the mesh's frame); ``image`` the network's input ``[S, S, 3]``;
    ``pose`` the camera network's ``(R [3, 3], t [3])`` of the mesh's frame, None for a given camera.
    """

    mesh: trimesh.Trimesh
    maps: np.ndarray
    timings: dict
    view: np.ndarray
    image: np.ndarray
    frame: str = "normalised"  # the mesh's frame: "world" or "normalised"
    pose: tuple | None = None


class Reconstructor:
    """A loaded SavedModel and the extraction settings; :meth:`reconstruct` turns images into meshes.

    Coarse-to-fine certification needs to know how far from a point the SDF cannot reach zero; for the
    fused field that is :func:`d2im_tf.inference.extraction.displaced_field_clearance`, from the base field and
    the range of the image's maps. ``lipschitz`` is ``L``, the base field's bound; the default
    ``2·sdf_scale`` allows a learned base field twice as steep as a true distance (in model units).
    ``one_pass_bounds``: evaluate the grid with the export's one-pass ``decode_bounds`` signature and
    complete the value (its ``fuse`` signature, the split's pass) only where the mesh needs it
    (:func:`~d2im_tf.inference.extraction.extract_fused_mesh`; the same mesh, about half the decoder
    passes); False, or an export without ``decode_bounds``, decodes exactly at every evaluated point.
    ``fill_cavities``: leave out the surfaces of closed pockets inside the object, which the training
    shapes never have (:func:`~d2im_tf.inference.extraction.fill_enclosed_cavities`; not in the paper).
    """

    def __init__(self, model_path, resolution: int = 128, mode: str = "coarse_to_fine",
                 initial_resolution: int = INITIAL_RESOLUTION, batch_points: int = BATCH_POINTS,
                 lipschitz: float | None = None, one_pass_bounds: bool = True, fill_cavities: bool = True):
        check_resolution(resolution, mode, initial_resolution)  # before the slow model load
        self._load(model_path)  # sets model_dir, info, image_size, sdf_scale, has_camera, model, frame, image_reading
        if self.frame not in FRAME_BOUNDS:
            raise UserError(f"{self.model_dir}: unknown frame {self.frame!r}")
        self.resolution, self.mode = resolution, mode
        self.initial_resolution = min(initial_resolution, resolution)
        self.batch_points = batch_points
        self.lipschitz = float(self.info.get("lipschitz", 2.0 * self.sdf_scale)) if lipschitz is None else lipschitz
        self.one_pass_bounds = one_pass_bounds and "decode_bounds" in self.model.signatures
        self.fill_cavities = fill_cavities

    def _load(self, model_path) -> None:
        self.model_dir = resolve_model_dir(model_path)
        info_path = self.model_dir / "assets.extra" / "d2im.json"
        try:
            self.info = json.loads(info_path.read_text())
            self.image_size = int(self.info["image_size"])
            self.sdf_scale = float(self.info["sdf_scale"])
            self.has_camera = bool(self.info["has_camera"])
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise UserError(f"{info_path}: unreadable model description "
                            f"({error.__class__.__name__}: {error})") from None
        try:
            self.model = tf.saved_model.load(str(self.model_dir))
        except Exception as error:  # a damaged SavedModel raises protobuf, OS and TF errors alike
            reason = " ".join(str(error).split())[:200] or error.__class__.__name__
            raise UserError(f"{self.model_dir}: cannot load the SavedModel; is it damaged or incomplete? "
                            f"({reason})") from None
        if "decode" not in self.model.signatures:
            raise UserError(f"{self.model_dir}: exported before the 'decode' signature existed; export it again")
        self.frame = self.info.get("frame", "normalised")  # exports before the import-torch command
        self.image_reading = self.info.get("image_reading", "white")
        if self.has_camera and "camera" not in self.model.signatures:
            raise UserError(f"{info_path}: says the model has a camera network, but it has no 'camera' signature")

    def require_camera(self, camera_row) -> None:
        """:class:`UserError` unless a view is given or the model can predict one."""
        if camera_row is None and not self.has_camera:
            raise UserError(f"{self.model_dir}: the model has no camera network; give the view with --camera")

    def projection(self, image: tf.Tensor, camera_row=None, norm_params=None):
        """``(projection, view, pose)`` for ``image [1, S, S, 3]``: the model frame's projection ``[1, 3, 4]``,
        the input view's metadata row in the mesh's frame, and the camera network's ``(R, t)`` — from
        ``camera_row`` (+ ``norm_params``; the pose is then None) or from the camera network."""
        if camera_row is not None:
            world = camera.projection_from_metadata(camera_row, self.image_size)[None]  # [1, 3, 4]
            if self.frame == "world":
                return tf.constant(world, tf.float32), np.asarray(camera_row, float), None
            params = frames.IDENTITY_NORM_PARAMS if norm_params is None else np.asarray(norm_params, float)
            projection = tf.constant(frames.normalised_projection(world, params), tf.float32)
            return projection, np.asarray(camera_row, float), None
        self.require_camera(camera_row)
        outputs = self.model.signatures["camera"](image=image)
        pose = outputs["rotation"][0].numpy(), outputs["translation"][0].numpy()
        return outputs["projection"], view_row_from_pose(*pose), pose

    def reconstruct(self, pixels: np.ndarray, camera_row=None, norm_params=None) -> Reconstruction:
        """Mesh of the object in ``pixels`` (any uint8 image, see :func:`prepare_image`)."""
        image = prepare_image(pixels, self.image_size, self.image_reading)  # [S, S, 3]
        batch = tf.constant(image[None])  # [1, S, S, 3]
        start = time.perf_counter()
        encoding = self.model.signatures["encode"](image=batch)  # global_code, maps, f0…f4
        encoded = time.perf_counter()
        projection, view, pose = self.projection(batch, camera_row, norm_params)
        timings = {"encode": encoded - start, "camera": time.perf_counter() - encoded}
        decode = self.model.signatures["decode"]
        maps = encoding["maps"][0].numpy()  # [S, S, 2]

        def decode_points(points):  # [N, 3] → fused [N], base [N] in the model's units (×sdf_scale)
            out = decode(points=tf.constant(points[None]), projection=projection, **encoding)
            return out["sdf"].numpy()[0], out["base"].numpy()[0]

        decode_bounds = fuse = None
        if self.one_pass_bounds:
            def decode_bounds(points):  # [N, 3] → base [N], displacements [N, 2]
                out = self.model.signatures["decode_bounds"](points=tf.constant(points[None]),
                                                             projection=projection, **encoding)
                return out["base"].numpy()[0], out["displacements"].numpy()[0]

            if "fuse" in self.model.signatures:  # exports before it decode the exact values from scratch
                def fuse(points, base, displacements):  # [N, 3], [N], [N, 2] → fused [N]
                    out = self.model.signatures["fuse"](points=tf.constant(points[None]), projection=projection,
                                                        base=tf.constant(base[None]),
                                                        displacements=tf.constant(displacements[None]), **encoding)
                    return out["sdf"].numpy()[0]

        mesh, stats = extract_fused_mesh(decode_points, maps, self.resolution, self.lipschitz,
                                         FRAME_BOUNDS[self.frame], decode_bounds, fuse,
                                         projection=np.asarray(projection)[0], mode=self.mode,
                                         initial_resolution=self.initial_resolution, batch_points=self.batch_points,
                                         fill_cavities=self.fill_cavities)
        stages = dict(stats.stage_seconds)
        timings["marching_cubes"] = stages.pop("marching_cubes")
        timings["sdf_evaluation"] = sum(stages.values())
        frame = self.frame
        if frame == "normalised" and camera_row is not None and norm_params is not None:
            mesh, frame = frames.to_world(mesh, np.asarray(norm_params, float)), "world"
        return Reconstruction(mesh, maps, timings, view, image, frame, pose)


def reconstruct_files(reconstructor: Reconstructor, targets: dict, camera_row=None, norm_params=None,
                      mesh_format: str = "obj", previews: bool = True, progress: bool = True) -> int:
    """Reconstruct each image file of ``targets`` (``{image path: mesh path}``) into its mesh file and,
    with ``previews``, ``<mesh stem>_preview.png`` beside it; returns how many images could not be read.

    An unreadable image is reported on one line and skipped; an input unlike the training renders, or
    a field without a surface in the box (no mesh is written then), is reported as a warning.
    """
    from tqdm import tqdm

    from d2im_tf.data.disn_format import atomic_path, read_image, write_png
    from d2im_tf.inference.preview import preview_image

    failed = 0
    for path, target in tqdm(targets.items(), desc="reconstruct", unit="image", disable=not progress,
                             file=sys.stderr):
        try:
            pixels = read_image(path)
        except UserError as error:
            tqdm.write(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        result = reconstructor.reconstruct(pixels, camera_row, norm_params)
        for warning in input_warnings(result.image):
            tqdm.write(f"warning: {path}: {warning}", file=sys.stderr)
        if len(result.mesh.faces) == 0:
            tqdm.write(f"warning: {path}: the predicted SDF has no surface in the box; no mesh written",
                       file=sys.stderr)
        else:
            with atomic_path(target) as tmp:
                result.mesh.export(tmp, file_type=mesh_format)
        if previews:
            preview = target.with_name(f"{target.stem}_preview.png")
            write_png(preview, preview_image(result.image, result.mesh, result.view, result.maps))
    return failed
