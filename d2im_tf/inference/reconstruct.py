"""Single-image reconstruction with an exported SavedModel: image → camera → SDF → mesh.

Only ``tf.saved_model.load`` and the export's signatures are used (:mod:`d2im_tf.deploy.export`): the image
is encoded once (``encode``), then the SDF is decoded chunk by chunk (``decode``) on the grid of
:func:`d2im_tf.inference.extraction.extract_mesh`, coarse-to-fine by default.

Input images: any PNG/JPEG, RGB, RGBA or grey, any size. They are brought to what the network saw in
training — the dataset's renders: a square image of the model's ``image_size`` with the object
centred on a white background. RGBA is composited on white, grey becomes RGB, a non-square image is
padded with white to a centred square, then resized. A photo should therefore show the object
roughly centred on a plain white background; :func:`input_warnings` says when an input does not.

:func:`prepare_input` adds two steps before that (docs/real_images.md): *matting* — an image without
alpha on a background that is not plain white is matted (:func:`d2im_tf.inference.matting.matte`,
GrabCut) and composited on white; RGBA keeps its alpha — and *re-framing* — the image is cropped to
the object's box and resized so that the box spans ``object_size`` of the side
(:func:`d2im_tf.data.framing.reframe`), the object size of the training renders: the median measured
by ``tools/framing_stats.py`` (:data:`TRAINING_OBJECT_SIZE`) for a model trained on uncropped renders,
the stored ``framing_object_size`` for one trained with ``data.framing_object_size``. Every step is an affine
map of pixel coordinates, so :attr:`Reconstruction.input_projection` maps the mesh's frame to the
pixels of the image as given.

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

import copy
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import trimesh
from PIL import Image

from d2im_tf.config import BATCH_POINTS
from d2im_tf.data import framing
from d2im_tf.data.disn_format import on_white
from d2im_tf.errors import UserError, size_text
from d2im_tf.geometry import camera, frames
from d2im_tf.inference import mirroring, pose_fit, silhouette_completion
from d2im_tf.inference.bridging import GapBridging
from d2im_tf.inference.extraction import (
    INITIAL_RESOLUTION,
    extract_fused_mesh,
    extract_mesh,
    grid_memory_bytes,
    levels_fit,
)
from d2im_tf.resources import machine_memory_bytes

WHITE = 255
BLACK = 0
FRAME_BOUNDS = {"normalised": frames.NORMALISED_BOX, "world": frames.WORLD_BOX}
SURFACES = ("detailed", "base")  # the fused field's zero set, or the base field f_B's alone
POSE_FIT_RESOLUTION = 64  # the coarse surface f_B that poses are fitted with
MAX_RESOLUTION = 1024  # marching-cubes cells per side; 1024³ is already ~4 GB of float32 SDF values
# The median object size (box side / image side) of the synthetic training renders, as measured by
# ``python tools/framing_stats.py --synthetic 12 --views 12`` (576 renders; p10 0.42, p90 0.69).
TRAINING_OBJECT_SIZE = 0.52


def check_resolution(resolution: int, mode: str = "dense", initial_resolution: int = INITIAL_RESOLUTION) -> None:
    """:class:`UserError` unless ``resolution`` suits the extraction ``mode`` (see :class:`Reconstructor`)."""
    if not 2 <= resolution <= MAX_RESOLUTION:
        raise UserError(f"--resolution must be between 2 and {MAX_RESOLUTION}, got {resolution}")
    initial = min(initial_resolution, resolution)
    if mode == "coarse_to_fine" and not levels_fit(resolution, initial):
        raise UserError(
            f"--resolution {resolution}: coarse-to-fine needs {initial}·2^k (e.g. 64, 128, 256), or use --mode dense"
        )
    need, available = grid_memory_bytes(resolution, mode), machine_memory_bytes()
    if need > available:
        raise UserError(
            f"--resolution {resolution} --mode {mode}: the grid needs at least {size_text(need)} of "
            f"memory, more than the {size_text(available)} this machine has; lower --resolution"
            + (" or use --mode coarse_to_fine" if mode == "dense" else "")
        )


def input_warnings(image: np.ndarray) -> list[str]:
    """How a prepared image ``[S, S, 3]`` differs from the training renders (an object centred on a
    white background), as short phrases; empty if it looks like one. The model has not seen such
    inputs, so its mesh is unreliable for them."""
    size = image.shape[0]
    ring = max(1, size // 16)
    white = np.all(image >= 0.9, axis=-1)  # [S, S]
    border = np.concatenate(
        [
            white[:ring].ravel(),
            white[-ring:].ravel(),
            white[ring:-ring, :ring].ravel(),
            white[ring:-ring, -ring:].ravel(),
        ]
    )
    if border.mean() < 0.9:
        return [
            f"only {border.mean():.0%} of its border is white background; the model was trained on "
            "objects centred on white (crop the object onto a white background)"
        ]
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


class PreparedInput(NamedTuple):
    """The network's input ``image [S, S, 3]`` float32, the affine ``transform [3, 3]`` of the input's
    pixel coordinates to the image's, and the input's ``foreground`` bool ``[H, W]``."""

    image: np.ndarray
    transform: np.ndarray
    foreground: np.ndarray


def prepare_input(
    pixels: np.ndarray,
    image_size: int,
    reading: str = "white",
    matting: bool = True,
    object_size: float | None = None,
    matted: np.ndarray | None = None,
) -> PreparedInput:
    """Any uint8 image → :class:`PreparedInput`: matted (unless ``matting`` is False or the image has
    alpha or a white background), then re-framed to ``object_size`` if given, else padded and resized as
    :func:`prepare_image` (module docstring). The ``"reference"`` reading does neither. ``matted``: the
    RGBA :func:`~d2im_tf.inference.matting.matte` gives for ``pixels``, when already computed."""
    from d2im_tf.inference import matting as matting_module

    pixels = np.asarray(pixels)
    height, width = pixels.shape[:2]
    rgba = matting_module.matte(pixels, matting and reading != "reference") if matted is None else matted
    foreground = rgba[..., 3] > 127  # [H, W]
    if reading == "reference" or object_size is None:
        source = rgba if matting_module.was_matted(pixels, matting) and reading != "reference" else pixels
        return PreparedInput(
            prepare_image(source, image_size, reading), framing.square_transform(height, width, image_size), foreground
        )
    has_alpha = pixels.ndim == 3 and pixels.shape[-1] in (2, 4)
    rgb = on_white(rgba) if has_alpha or matting_module.was_matted(pixels, matting) else rgba[..., :3]
    image, transform = framing.reframe(np.asarray(rgb, np.float32), foreground, object_size, image_size)
    return PreparedInput(np.clip(image / 255.0, 0.0, 1.0).astype(np.float32), transform, foreground)


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
    return np.array(
        [
            azimuth,
            elevation,
            0.0,
            distance / camera.MAX_DISTANCE,
            camera.FOCAL_MM,
            camera.SENSOR_MM,
            camera.MAX_DISTANCE,
            0.0,
            0.0,
            0.0,
        ]
    )


class Reconstruction(NamedTuple):
    """One reconstruction: the first three fields are ``(mesh, maps, timings)``.

    ``mesh`` in the world frame for a given camera, else the normalised frame (always the world frame
    for a model that works in it), as ``frame`` says; ``maps`` float32
    ``[S, S, 2]`` (front, back displacement maps, SDF units); ``timings`` seconds per stage
    (``encode``, ``camera``, ``sdf_evaluation``, ``marching_cubes``, and ``pose_fit`` when the pose was
    fitted); ``view`` the metadata row the mesh is seen from in the input (in the mesh's frame); ``image``
    the network's input ``[S, S, 3]``; ``pose`` the camera network's ``(R [3, 3], t [3])`` of the mesh's
    frame (fitted to the outline with ``fit_pose``), None for a given camera; ``input_pose`` the same pose
    for the input as given, before re-framing (:func:`~d2im_tf.geometry.camera.unreframed_pose`; what
    DISN's camera metrics compare with the render's camera); ``mirrored`` whether the mesh comes from the
    input read mirrored (:mod:`d2im_tf.inference.mirroring`; reflected back).
    """

    mesh: trimesh.Trimesh
    maps: np.ndarray
    timings: dict
    view: np.ndarray
    image: np.ndarray
    frame: str = "normalised"  # the mesh's frame: "world" or "normalised"
    pose: tuple | None = None
    input_projection: np.ndarray | None = None
    foreground: np.ndarray | None = None
    mirrored: bool = False
    input_pose: tuple | None = None


def reframing_transform(transform: np.ndarray, shape, image_size: int) -> np.ndarray:
    """``[3, 3]``: the pixels of an input of ``shape`` padded and resized to ``image_size`` → the pixels of
    the image that ``transform`` (input pixels → network pixels) makes; the identity without re-framing."""
    return np.asarray(transform) @ np.linalg.inv(framing.square_transform(*shape[:2], image_size))


class EncodedInput(NamedTuple):
    """One input through :meth:`Reconstructor.encode_input`: the :class:`PreparedInput`, ``encode``'s
    outputs (batch 1), the ``projection`` ``[1, 3, 4]`` (model frame → the prepared image's pixels), the
    ``view`` metadata row, the camera network's (fitted) ``pose`` (None for a given camera), the
    ``timings`` of encode, camera and pose fit (seconds), whether the input was read ``mirrored``
    (:mod:`~d2im_tf.inference.mirroring`; the image, projection, view and pose are then the flipped
    image's) and the encoding's ``score``: the silhouette cost of its fitted pose (pixels; inf unmeasured)."""

    prepared: PreparedInput
    encoding: dict
    projection: tf.Tensor
    view: np.ndarray
    pose: tuple | None
    timings: dict
    mirrored: bool = False
    score: float = np.inf


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
    ``bridge_gaps``: join the parts the field leaves apart by a hair, such as a leg whose top stops just
    short of the table top (:mod:`d2im_tf.inference.bridging`, its default settings; not in the paper).
    ``matting``: matte inputs on backgrounds that are not plain white (:func:`prepare_input`).
    ``fit_pose``: refine the camera network's pose against the input's foreground
    (:mod:`d2im_tf.inference.pose_fit`; never for a given camera).
    ``complete``: lower the base field along the foreground rays that never enter the surface, so thin
    parts f_B only hints at appear (:mod:`d2im_tf.inference.silhouette_completion`; the detailed surface).
    ``try_mirrored``: with a predicted camera, read the input mirrored too and keep that reading when its
    coarse outline fits the foreground far better (:mod:`d2im_tf.inference.mirroring`).
    ``object_size``: ``"auto"`` re-frames inputs to the model's training object size (its stored
    ``framing_object_size``, else :data:`TRAINING_OBJECT_SIZE`; never for the ``"reference"`` reading,
    and with a given camera only for a model trained with re-framing), ``"trained"`` re-frames only for a
    model trained with re-framing (to its stored size), a number re-frames to that size, None keeps the
    framing as given.
    """

    def __init__(
        self,
        model_path,
        resolution: int = 128,
        mode: str = "coarse_to_fine",
        initial_resolution: int = INITIAL_RESOLUTION,
        batch_points: int = BATCH_POINTS,
        lipschitz: float | None = None,
        one_pass_bounds: bool = True,
        fill_cavities: bool = True,
        bridge_gaps: bool = True,
        matting: bool = True,
        object_size: float | str | None = "auto",
        fit_pose: bool = True,
        complete: bool = False,
        try_mirrored: bool = True,
    ):
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
        self.bridging = self._bridging(bridge_gaps)
        self.matting = matting
        self.fit_pose = fit_pose
        self.complete = complete
        self.try_mirrored = try_mirrored
        # "auto" re-frames only for the camera network: a given camera (--camera) is that of the render as
        # it is, and the SDF network of a model trained on uncropped renders breaks under cropped intrinsics
        self.reframe_given_camera = object_size != "auto" or "framing_object_size" in self.info
        stored = self.info.get("framing_object_size")
        if object_size == "auto":
            object_size = None if self.image_reading == "reference" else float(stored or TRAINING_OBJECT_SIZE)
        elif object_size == "trained":
            object_size = float(stored) if stored else None
        if object_size is not None and not 0.0 < float(object_size) <= 1.0:
            raise UserError(f"the object size must be in (0, 1], got {object_size}")
        self.object_size = None if object_size is None else float(object_size)

    def _load(self, model_path) -> None:
        self.model_dir = resolve_model_dir(model_path)
        info_path = self.model_dir / "assets.extra" / "d2im.json"
        try:
            self.info = json.loads(info_path.read_text())
            self.image_size = int(self.info["image_size"])
            self.sdf_scale = float(self.info["sdf_scale"])
            self.has_camera = bool(self.info["has_camera"])
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise UserError(
                f"{info_path}: unreadable model description ({error.__class__.__name__}: {error})"
            ) from None
        try:
            self.model = tf.saved_model.load(str(self.model_dir))
        except Exception as error:  # a damaged SavedModel raises protobuf, OS and TF errors alike
            reason = " ".join(str(error).split())[:200] or error.__class__.__name__
            raise UserError(
                f"{self.model_dir}: cannot load the SavedModel; is it damaged or incomplete? ({reason})"
            ) from None
        if "decode" not in self.model.signatures:
            raise UserError(f"{self.model_dir}: exported before the 'decode' signature existed; export it again")
        self.frame = self.info.get("frame", "normalised")  # exports before the import-torch command
        self.image_reading = self.info.get("image_reading", "white")
        if self.has_camera and "camera" not in self.model.signatures:
            raise UserError(f"{info_path}: says the model has a camera network, but it has no 'camera' signature")

    def reframing_size(self, camera_row=None) -> float | None:
        """The object size an input is re-framed to with ``camera_row`` (None: a predicted camera), or None."""
        return self.object_size if camera_row is None or self.reframe_given_camera else None

    def require_camera(self, camera_row) -> None:
        """:class:`UserError` unless a view is given or the model can predict one."""
        if camera_row is None and not self.has_camera:
            raise UserError(f"{self.model_dir}: the model has no camera network; give the view with --camera")

    def projection(self, image: tf.Tensor, camera_row=None, norm_params=None, reframing=None):
        """``(projection, view, pose)`` for ``image [1, S, S, 3]``: the model frame's projection ``[1, 3, 4]``,
        the input view's metadata row in the mesh's frame, and the camera network's ``(R, t)`` — from
        ``camera_row`` (+ ``norm_params``; the pose is then None) or from the camera network.
        ``reframing`` ``[3, 3]``: the affine of the padded, resized render's pixels to the image's, which
        a given camera (the render's) is moved by."""
        if camera_row is not None:
            world = camera.projection_from_metadata(camera_row, self.image_size)[None]  # [1, 3, 4]
            if reframing is not None:
                world = reframing @ world
            if self.frame == "world":
                return tf.constant(world, tf.float32), np.asarray(camera_row, float), None
            params = frames.IDENTITY_NORM_PARAMS if norm_params is None else np.asarray(norm_params, float)
            projection = tf.constant(frames.normalised_projection(world, params), tf.float32)
            return projection, np.asarray(camera_row, float), None
        self.require_camera(camera_row)
        outputs = self.model.signatures["camera"](image=image)
        pose = outputs["rotation"][0].numpy(), outputs["translation"][0].numpy()
        return outputs["projection"], view_row_from_pose(*pose), pose

    def with_resolution(self, resolution: int) -> "Reconstructor":
        """The same loaded model extracting at ``resolution`` (:class:`UserError` if the mode cannot use
        it)."""
        check_resolution(resolution, self.mode, self.initial_resolution)
        return self._replaced(resolution=resolution)

    def with_completion(self, complete: bool) -> "Reconstructor":
        """The same loaded model with the silhouette completion on or off."""
        return self._replaced(complete=bool(complete))

    def with_cleanup(self, fill_cavities: bool, bridge_gaps: bool) -> "Reconstructor":
        """The same loaded model with the cavity filling and the gap bridging (their default settings) on
        or off."""
        return self._replaced(fill_cavities=bool(fill_cavities), bridging=self._bridging(bridge_gaps))

    def _bridging(self, bridge_gaps: bool) -> GapBridging | None:
        """The gap bridging's default settings for this model's box, or None (the paper's extraction)."""
        low, high = FRAME_BOUNDS[self.frame]
        return GapBridging.for_box(high - low, self.sdf_scale) if bridge_gaps else None

    def with_mirroring(self, try_mirrored: bool) -> "Reconstructor":
        """The same loaded model also reading inputs mirrored, or reading them once, as given."""
        return self._replaced(try_mirrored=bool(try_mirrored))

    def _replaced(self, **settings) -> "Reconstructor":
        """A shallow copy (the networks shared) with ``settings`` replacing the same-named attributes."""
        other = copy.copy(self)
        vars(other).update(settings)
        return other

    def reconstruct(
        self, pixels: np.ndarray, camera_row=None, norm_params=None, surface: str = "detailed"
    ) -> Reconstruction:
        """Mesh of the object in ``pixels`` (any uint8 image, see :func:`prepare_input`).

        ``surface``: ``"detailed"`` the fused field's zero set (the model's output), ``"base"`` that of
        the base field f_B alone, the coarse shape before the displacement maps are added."""
        if surface not in SURFACES:
            raise ValueError(f"surface must be one of {SURFACES}, got {surface!r}")
        encoded = self.encode_input(pixels, camera_row, norm_params)
        prepared, encoding, projection, view, pose, timings = encoded[:6]
        decode_points = self.point_decoder(encoding, projection)
        maps = encoding["maps"][0].numpy()  # [S, S, 2]

        if surface == "base":
            mesh, stats = self._extract_base(decode_points, projection, encoding)
        else:
            completion = None
            if self.complete:
                started = time.perf_counter()
                completion = self._completion(decode_points, projection, encoding, prepared)
                timings["completion"] = time.perf_counter() - started
            mesh, stats = self._extract_fused(decode_points, projection, encoding, maps, completion)
        stages = dict(stats.stage_seconds)
        timings["marching_cubes"] = stages.pop("marching_cubes")
        timings["sdf_evaluation"] = sum(stages.values())
        frame = self.frame
        model_projection = np.asarray(projection, np.float64)[0]  # [3, 4] the mesh's frame → the image's pixels
        if frame == "normalised" and camera_row is not None and norm_params is not None:
            mesh, frame = frames.to_world(mesh, np.asarray(norm_params, float)), "world"
            model_projection = model_projection @ np.linalg.inv(frames.denormalising_matrix(norm_params))
        input_projection = np.linalg.inv(prepared.transform) @ model_projection
        image = prepared.image
        transform = prepared.transform
        if encoded.mirrored:  # the flipped image's reading, reflected back (module mirroring)
            mesh, input_projection = mirroring.reflected(mesh), mirroring.unmirrored_projection(input_projection)
            pose = mirroring.unmirrored_pose(*pose)
            view, maps, image = view_row_from_pose(*pose), maps[:, ::-1], image[:, ::-1]
            transform = framing.flip_transform(self.image_size) @ transform  # the flip undone
        given_pose = None
        if pose is not None:
            reframing = reframing_transform(transform, np.shape(pixels), self.image_size)
            given_pose = camera.unreframed_pose(*pose, reframing, self.image_size)
        return Reconstruction(
            mesh,
            maps,
            timings,
            view,
            image,
            frame,
            pose,
            input_projection,
            prepared.foreground,
            encoded.mirrored,
            given_pose,
        )

    def encode_input(self, pixels: np.ndarray, camera_row=None, norm_params=None) -> EncodedInput:
        """An image prepared (:func:`prepare_input`: matted, re-framed), encoded, and its camera: given
        (``camera_row`` + ``norm_params``), or predicted and fitted to the outline (``fit_pose``). With a
        predicted camera and ``try_mirrored``, the encoding kept of the plain and the mirrored input
        (:mod:`~d2im_tf.inference.mirroring`; its ``mirrored`` says which)."""
        pixels = np.asarray(pixels)
        size = self.reframing_size(camera_row)
        if camera_row is not None or not self.try_mirrored:
            return self._encode_once(pixels, False, size, camera_row, norm_params)
        self.require_camera(camera_row)
        from d2im_tf.inference import matting as matting_module

        started = time.perf_counter()
        matted = matting_module.matte(pixels, self.matting and self.image_reading != "reference")
        encoded = [self._encode_once(pixels, mirrored, size, matted=matted) for mirrored in (False, True)]
        kept = encoded[mirroring.kept([one.score for one in encoded])]
        kept.timings["mirroring"] = time.perf_counter() - started
        return kept

    def _encode_once(
        self, pixels: np.ndarray, mirrored: bool, object_size, camera_row=None, norm_params=None, matted=None
    ) -> EncodedInput:
        """:meth:`encode_input` once, re-framed to ``object_size``; ``mirrored``: of the flipped network
        input, its transform and pose those of the flipped image."""
        prepared = prepare_input(pixels, self.image_size, self.image_reading, self.matting, object_size, matted)
        if mirrored:
            flip = framing.flip_transform(self.image_size)
            prepared = PreparedInput(prepared.image[:, ::-1].copy(), flip @ prepared.transform, prepared.foreground)
        batch = tf.constant(prepared.image[None])  # [1, S, S, 3]
        start = time.perf_counter()
        encoding = self.model.signatures["encode"](image=batch)  # global_code, maps, f0…f4
        encoded = time.perf_counter()
        reframing = reframing_transform(prepared.transform, pixels.shape, self.image_size)
        projection, view, pose = self.projection(batch, camera_row, norm_params, reframing)
        timings = {"encode": encoded - start, "camera": time.perf_counter() - encoded}
        cost = np.inf
        if pose is not None and (self.fit_pose or self.try_mirrored):  # the cost scores a mirrored reading
            fitted = time.perf_counter()
            fitted_pose, cost = self._fitted_pose(pose, projection, encoding, prepared, search=self.fit_pose)
            if self.fit_pose:
                pose = fitted_pose
                projection = camera.projection_from_pose(
                    tf.constant(pose[0][None]), tf.constant(pose[1][None]), self.image_size
                )
                view = view_row_from_pose(*pose)
                timings["pose_fit"] = time.perf_counter() - fitted
        return EncodedInput(prepared, encoding, projection, view, pose, timings, mirrored, cost)

    def point_decoder(self, encoding: dict, projection):
        """``points [N, 3] → (fused [N], base [N])`` in the model's units (× sdf_scale) for one encoding."""
        decode = self.model.signatures["decode"]

        def decode_points(points):
            out = decode(points=tf.constant(points[None]), projection=projection, **encoding)
            return out["sdf"].numpy()[0], out["base"].numpy()[0]

        return decode_points

    def _fitted_pose(self, pose, projection, encoding, prepared: PreparedInput, search: bool = True):
        """``(pose, cost)``: the camera network's ``pose`` refined against the input's foreground
        (:func:`d2im_tf.inference.pose_fit.fit_pose`; as predicted unless ``search``) with f_B's surface at
        ``POSE_FIT_RESOLUTION``³ (its vertices, an outline: not bridged), and its silhouette cost (inf without a
        surface or a usable foreground)."""
        coarse = self.with_resolution(min(self.resolution, POSE_FIT_RESOLUTION))._replaced(bridging=None)
        mesh, _ = coarse._extract_base(self.point_decoder(encoding, projection), projection, encoding)
        mask = self.network_foreground(prepared)
        if len(mesh.vertices) == 0 or mask is None:
            return pose, np.inf
        k = camera.intrinsics(self.image_size)
        if not search:
            return pose, pose_fit.silhouette_cost(mesh.vertices, mask, k, *pose)
        fit = pose_fit.fit_pose(mesh.vertices, mask, k, *pose)
        return (fit.rotation.astype(np.float32), fit.translation.astype(np.float32)), fit.cost

    def network_foreground(self, prepared: PreparedInput) -> np.ndarray | None:
        """bool ``[S, S]``: the input's foreground in the network's input image, or None when it says
        nothing of the outline (no object found, or no background)."""
        mask = framing.warp(prepared.foreground.astype(np.float32), prepared.transform, self.image_size, fill=0.0) > 0.5
        return mask if pose_fit.MIN_FOREGROUND <= mask.mean() <= pose_fit.MAX_FOREGROUND else None

    def _completion(self, decode_points, projection, encoding, prepared: PreparedInput):
        """The :class:`~d2im_tf.inference.silhouette_completion.Completion` of f_B against the input's
        foreground, or None (nothing to complete, or no usable foreground)."""
        mask = self.network_foreground(prepared)
        if mask is None:
            return None
        return silhouette_completion.complete_silhouette(
            self._base_values(decode_points, projection, encoding),
            np.asarray(projection)[0],
            mask,
            self.sdf_scale,
            FRAME_BOUNDS[self.frame],
        )

    def _base_values(self, decode_points, projection, encoding):
        """``points [N, 3] → f_B [N]`` for one encoding: ``decode_bounds`` (without the front/back split's
        pass) when ``one_pass_bounds``, else ``decode_points``' base."""
        if self.one_pass_bounds:

            def base_values(points):
                out = self.model.signatures["decode_bounds"](
                    points=tf.constant(points[None]), projection=projection, **encoding
                )
                return out["base"].numpy()[0]

            return base_values
        return lambda points: decode_points(points)[1]

    def _extract_base(self, decode_points, projection, encoding):
        """The zero set of f_B alone (Lipschitz ``self.lipschitz``): ``(mesh, stats)``."""
        return extract_mesh(
            self._base_values(decode_points, projection, encoding),
            self.resolution,
            FRAME_BOUNDS[self.frame],
            mode=self.mode,
            initial_resolution=self.initial_resolution,
            batch_points=self.batch_points,
            lipschitz=self.lipschitz,
            fill_cavities=self.fill_cavities,
            bridging=self.bridging,
        )

    def _extract_fused(self, decode_points, projection, encoding, maps, completion=None):
        """The zero set of the fused field f_B + displacement (minus the ``completion``'s lowering):
        ``(mesh, stats)``."""
        decode_bounds = fuse = None
        if self.one_pass_bounds:

            def decode_bounds(points):  # [N, 3] → base [N], displacements [N, 2]
                out = self.model.signatures["decode_bounds"](
                    points=tf.constant(points[None]), projection=projection, **encoding
                )
                return out["base"].numpy()[0], out["displacements"].numpy()[0]

            if "fuse" in self.model.signatures:  # exports before it decode the exact values from scratch

                def fuse(points, base, displacements):  # [N, 3], [N], [N, 2] → fused [N]
                    out = self.model.signatures["fuse"](
                        points=tf.constant(points[None]),
                        projection=projection,
                        base=tf.constant(base[None]),
                        displacements=tf.constant(displacements[None]),
                        **encoding,
                    )
                    return out["sdf"].numpy()[0]

        return extract_fused_mesh(
            decode_points,
            maps,
            self.resolution,
            self.lipschitz,
            FRAME_BOUNDS[self.frame],
            decode_bounds,
            fuse,
            projection=np.asarray(projection)[0],
            lowering=completion,
            mode=self.mode,
            initial_resolution=self.initial_resolution,
            batch_points=self.batch_points,
            fill_cavities=self.fill_cavities,
            bridging=self.bridging,
        )


def camera_description(result: Reconstruction, image_shape) -> dict:
    """The content of ``<name>_camera.json``: the 3×4 ``projection`` from the mesh's frame to the pixels of
    the input image as given (``image_size`` = [width, height]), the conventions to read it, and whether
    the mesh comes from the input read ``mirrored`` (reflected back; the projection is the input's)."""
    return {
        "projection": np.asarray(result.input_projection, float).round(9).tolist(),
        "image_size": [int(image_shape[1]), int(image_shape[0])],
        "mesh_frame": result.frame,
        "mirrored": bool(result.mirrored),
        "convention": "P·[x, y, z, 1] = w·[u, v, 1], w > 0 the depth; u right, v down, in pixels of the input "
        "image as given, the top-left corner of pixel (0, 0) at the origin (its centre at 0.5, 0.5)",
    }


def reconstruct_files(
    reconstructor: Reconstructor,
    targets: dict,
    camera_row=None,
    norm_params=None,
    mesh_format: str = "obj",
    previews: bool = True,
    progress: bool = True,
) -> int:
    """Reconstruct each image file of ``targets`` (``{image path: mesh path}``) into its mesh file and,
    ``<mesh stem>_camera.json`` (:func:`camera_description`) and, with ``previews``, ``<mesh stem>_preview.png``
    beside it; returns how many images could not be read.

    An unreadable image is reported on one line and skipped; an input unlike the training renders, or
    a field without a surface in the box (no mesh is written then), is reported as a warning.
    """
    from tqdm import tqdm

    from d2im_tf.data.disn_format import read_image, write_png
    from d2im_tf.inference.preview import preview_image
    from d2im_tf.io import atomic_path

    failed = 0
    for path, target in tqdm(targets.items(), desc="reconstruct", unit="image", disable=not progress, file=sys.stderr):
        try:
            pixels = read_image(path)
        except UserError as error:
            tqdm.write(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        result = reconstructor.reconstruct(pixels, camera_row, norm_params)
        given = result.image  # the input padded and resized, without re-framing
        if reconstructor.reframing_size(camera_row) is None:
            warnings = input_warnings(result.image)
        else:  # the background as given (after matting); re-framing centres the object
            given = prepare_input(
                pixels, reconstructor.image_size, reconstructor.image_reading, reconstructor.matting, None
            ).image
            warnings = [warning for warning in input_warnings(given) if "off-centre" not in warning]
        for warning in warnings:
            tqdm.write(f"warning: {path}: {warning}", file=sys.stderr)
        if len(result.mesh.faces) == 0:
            tqdm.write(
                f"warning: {path}: the predicted SDF has no surface in the box; no mesh written", file=sys.stderr
            )
        else:
            with atomic_path(target) as tmp:
                result.mesh.export(tmp, file_type=mesh_format)
            with atomic_path(target.with_name(f"{target.stem}_camera.json")) as tmp:
                tmp.write_text(json.dumps(camera_description(result, pixels.shape)) + "\n")
        if previews:
            preview = target.with_name(f"{target.stem}_preview.png")
            # a given camera's view row is that of the input as given; a predicted one, of the network's input
            shown = given if camera_row is not None else result.image
            write_png(preview, preview_image(shown, result.mesh, result.view, result.maps))
    return failed
