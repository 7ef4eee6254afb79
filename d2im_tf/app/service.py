"""The loaded model and what it made: one :class:`Service` per server.

The SavedModel is loaded once (:class:`d2im_tf.inference.reconstruct.Reconstructor`, shared by the
resolutions offered). :meth:`Service.reconstruct` runs the reconstruction ``d2im reconstruct`` runs;
:meth:`Service.transfer` and :meth:`Service.paste` run the applications ``d2im transfer`` and ``d2im
paste`` run (:mod:`d2im_tf.applications`, through a :class:`~d2im_tf.applications.fields.FieldModel`
of the same loaded model). Each keeps its result under a random id in a bounded store (the oldest
are dropped): the images the page shows (the network's inputs, displacement maps), and the meshes,
exported on request as GLB, OBJ or PLY. A result's other surface (the base shape f_B beside the
detailed one; the target's own reconstruction beside a transfer or a paste) is made from the stored
inputs when first asked for.
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import trimesh
from PIL import Image

from d2im_tf.app.validation import RESOLUTIONS, ApiError
from d2im_tf.applications.fields import FieldModel
from d2im_tf.applications.paste import logo_paste
from d2im_tf.applications.transfer import transfer_images
from d2im_tf.errors import UserError
from d2im_tf.geometry import camera
from d2im_tf.inference.preview import diverging_colours
from d2im_tf.inference.reconstruct import Reconstructor, input_warnings

# Results kept for the page's later requests (maps, the other surface, downloads): a page needs its
# last one; each holds its meshes (~1.5 MB at 128³), and long-lived meshes fragment the heap.
MAX_RESULTS = 8
MAP_NAMES = ("front", "back")
log = logging.getLogger("d2im.app")

# What a result of each kind offers: its surfaces (the first is the one the request returns unless it
# asked for another) with the page's labels, and its images with their captions.
SURFACE_LABELS = {
    "reconstruct": {"detailed": "Detailed", "base": "Base shape f_B"},
    "transfer": {"transfer": "Transfer", "target": "Target alone"},
    "paste": {"paste": "Paste", "target": "Target alone"},
}
CAPTIONS = {
    "reconstruct": {"input": "network input", "front": "front map", "back": "back map"},
    "transfer": {
        "input": "target (network input)",
        "source": "source (network input)",
        "front": "source's front map",
        "back": "source's back map",
    },
    "paste": {"pasted": "target with the logo", "logo": "logo (network input)", "front": "logo's front map"},
}


@dataclass
class Result:
    """One request's result: ``kind`` (reconstruct, transfer, paste), ``image`` the network's input of
    the image the mesh is seen from, uint8 ``[S, S, 3]``, ``maps`` float32 ``[S, S, 2]`` (front, back; SDF
    units) of which ``map_names`` are shown, ``pictures`` further uint8 images by name, the view's camera
    centre in the mesh's frame, ``make`` (a surface's name → its mesh, for those not made yet), ``completion``
    whether the silhouette completion was on and ``fill_cavities``, ``bridge_gaps`` whether the surface
    clean-up was (a reconstruction), ``meshes`` per surface made so far and seconds per surface."""

    id: str
    resolution: int
    image: np.ndarray
    maps: np.ndarray
    camera_position: list
    warnings: list
    make: Callable[[str], trimesh.Trimesh]
    kind: str = "reconstruct"
    completion: bool = False
    fill_cavities: bool = True
    bridge_gaps: bool = True
    map_names: tuple = MAP_NAMES
    pictures: dict = field(default_factory=dict)
    meshes: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    @property
    def surfaces(self) -> tuple:
        return tuple(SURFACE_LABELS[self.kind])

    @property
    def images(self) -> tuple:
        return tuple(CAPTIONS[self.kind])


class Service:
    """The model behind the API: ``model_path`` a SavedModel with a camera network (module docstring)."""

    def __init__(self, model_path, max_results: int = MAX_RESULTS):
        self.reconstructor = Reconstructor(model_path, resolution=RESOLUTIONS[0])
        if not self.reconstructor.has_camera:
            raise UserError(f"{model_path}: the model has no camera network; the app needs one to see the view")
        directory = self.reconstructor.model_dir
        self.model_name = directory.parent.name if directory.name.isdigit() else directory.name
        self.image_size = self.reconstructor.image_size
        self._by_resolution = {r: self.reconstructor.with_resolution(r) for r in RESOLUTIONS}
        try:  # the applications' view of the same loaded model, per resolution
            self._fields = {r: FieldModel(self._by_resolution[r]) for r in RESOLUTIONS}
            self.applications_error = None
        except UserError as error:  # e.g. weights imported from the authors' release (world frame)
            log.warning("transfer and paste are off: %s", error)
            self._fields = {}
            self.applications_error = (
                f"this server's model ({self.model_name}) cannot run transfer or paste: they need a model "
                "of this project (normalised frame, with the decode_bounds and fuse signatures)"
            )
        self._results: OrderedDict[str, Result] = OrderedDict()
        self._max_results = max_results
        self._lock = threading.Lock()

    def warm_up(self) -> float:
        """One reconstruction of a blank image at each resolution (traces the signatures); seconds taken."""
        start = time.perf_counter()
        blank = np.full((self.image_size, self.image_size, 3), 255, np.uint8)
        blank[self.image_size // 4 : -self.image_size // 4, self.image_size // 4 : -self.image_size // 4] = 90
        for resolution in RESOLUTIONS[:2]:
            self._by_resolution[resolution].reconstruct(blank)
        return time.perf_counter() - start

    def reconstruct(
        self,
        pixels: np.ndarray,
        resolution: int,
        surface: str,
        completion: bool = False,
        fill_cavities: bool = True,
        bridge_gaps: bool = True,
    ) -> Result:
        """Reconstruct ``pixels`` (uint8 image) into ``surface`` and store the result (blocking);
        ``completion``: ``d2im reconstruct --completion on`` (the detailed surface only); ``fill_cavities``,
        ``bridge_gaps``: False as ``--keep-cavities``, ``--keep-gaps`` (both surfaces)."""
        start = time.perf_counter()
        reconstructor = (
            self._by_resolution[resolution].with_completion(completion).with_cleanup(fill_cavities, bridge_gaps)
        )
        made = reconstructor.reconstruct(pixels, surface=surface)
        position = camera.camera_centre(*made.pose) if made.pose is not None else _centre_of_view(made.view)
        result = Result(
            secrets.token_hex(8),
            resolution,
            to_uint8(made.image),
            made.maps,
            [float(v) for v in position],
            input_warnings(made.image),
            # the other surface: from the uploaded pixels, through the same matting and re-framing
            make=lambda other: reconstructor.reconstruct(pixels, surface=other).mesh,
            completion=completion,
            fill_cavities=fill_cavities,
            bridge_gaps=bridge_gaps,
        )
        return self._keep(result, surface, made.mesh, start)

    def transfer(self, source_pixels: np.ndarray, target_pixels: np.ndarray, where: str, resolution: int) -> Result:
        """``d2im transfer``'s mesh: the source's details on the target's coarse shape (blocking)."""
        start = time.perf_counter()
        model = self._field_model(resolution)
        try:
            source, target, composition = transfer_images(model, source_pixels, target_pixels, where)
        except UserError as error:  # a coarse shape without inside: nothing to map the boxes between
            raise ApiError(422, str(error)) from None
        mesh = model.extract(target, composition)
        warnings = input_warnings(target.image) + [f"source: {text}" for text in input_warnings(source.image)]
        result = Result(
            secrets.token_hex(8),
            resolution,
            to_uint8(target.image),
            source.maps,
            [float(v) for v in _centre_of_view(target.view)],
            warnings,
            make=lambda other: model.extract(target),  # "target": its own reconstruction
            kind="transfer",
            pictures={"source": to_uint8(source.image)},
        )
        return self._keep(result, "transfer", mesh, start)

    def paste(
        self, target_pixels: np.ndarray, logo_pixels: np.ndarray, at, size, blend: str, resolution: int
    ) -> Result:
        """``d2im paste``'s mesh: the target with the logo in relief, centred at ``at`` (x, y) with its
        longer side ``size`` (None: its own), in the target's pixels (blocking)."""
        start = time.perf_counter()
        model = self._field_model(resolution)
        target, logo, composition, pasted = logo_paste(model, target_pixels, logo_pixels, at, size, blend)
        mesh = model.extract(target, composition)
        result = Result(
            secrets.token_hex(8),
            resolution,
            to_uint8(target.image),
            logo.maps,
            [float(v) for v in _centre_of_view(target.view)],
            input_warnings(target.image),
            make=lambda other: model.extract(target),  # "target": its own reconstruction
            kind="paste",
            map_names=("front",),  # only the logo's front map is used
            pictures={"pasted": pasted, "logo": to_uint8(logo.image)},
        )
        return self._keep(result, "paste", mesh, start)

    def _field_model(self, resolution: int) -> FieldModel:
        if self.applications_error:
            raise ApiError(501, self.applications_error)
        return self._fields[resolution]

    def _keep(self, result: Result, surface: str, mesh: trimesh.Trimesh, start: float) -> Result:
        """``result`` with its first mesh, in the store (the oldest dropped)."""
        result.meshes[surface] = _checked(mesh, surface)
        result.seconds[surface] = time.perf_counter() - start
        with self._lock:
            self._results[result.id] = result
            while len(self._results) > self._max_results:
                self._results.popitem(last=False)
        return result

    def get(self, result_id: str) -> Result:
        with self._lock:
            result = self._results.get(result_id)
            if result is not None:
                self._results.move_to_end(result_id)
        if result is None:
            raise ApiError(404, f"no such result (results are kept for the last {self._max_results} requests)")
        return result

    def surface(self, result: Result, surface: str) -> trimesh.Trimesh:
        """``result``'s mesh of ``surface``, made now from its stored inputs if not yet (blocking)."""
        if surface not in result.meshes:
            start = time.perf_counter()
            mesh = _checked(result.make(surface), surface)
            with self._lock:
                result.meshes.setdefault(surface, mesh)
                result.seconds.setdefault(surface, time.perf_counter() - start)
        return result.meshes[surface]

    def mesh_file(self, result: Result, surface: str, mesh_format: str) -> bytes:
        """The mesh of a surface already made, as GLB, OBJ or PLY bytes (exported on each request, in
        ~0.05 s at 128³: the store keeps meshes only, ~1.5 MB each at 128³)."""
        return export_mesh(result.meshes[surface], mesh_format)

    def image_file(self, result: Result, name: str) -> bytes:
        """``input``: the network's input; ``front``/``back``: a displacement map on the symmetric
        blue–white–red scale of :func:`d2im_tf.inference.preview.diverging_colours`, shared by the maps
        shown; another of ``result.images``: that picture."""
        if name == "input":
            return png_bytes(result.image)
        if name in result.map_names:
            return png_bytes(diverging_colours(result.maps[..., MAP_NAMES.index(name)], map_scale(result) or 1.0))
        return png_bytes(result.pictures[name])

    def describe(self, result: Result) -> dict:
        """The JSON the page reads after a request: files, sizes, timings, camera, warnings."""
        base = f"/api/results/{result.id}"
        labels, captions = SURFACE_LABELS[result.kind], CAPTIONS[result.kind]
        return {
            "id": result.id,
            "kind": result.kind,
            "model": self.model_name,
            "resolution": result.resolution,
            "completion": result.completion,
            "fill_cavities": result.fill_cavities,
            "bridge_gaps": result.bridge_gaps,
            "image_size": self.image_size,
            "warnings": result.warnings,
            "camera": {"position": result.camera_position, "fov_degrees": FIELD_OF_VIEW},
            "map_scale": map_scale(result),
            "images": {name: f"{base}/{name}.png" for name in result.images},
            "captions": captions,
            "surfaces": {
                surface: {
                    "label": labels[surface],
                    "made": surface in result.meshes,
                    "seconds": result.seconds.get(surface),
                    "vertices": len(result.meshes[surface].vertices) if surface in result.meshes else None,
                    "faces": len(result.meshes[surface].faces) if surface in result.meshes else None,
                    "files": {fmt: f"{base}/{surface}.{fmt}" for fmt in ("glb", "obj", "ply")},
                }
                for surface in result.surfaces
            },
        }


def map_scale(result: Result) -> float:
    """The largest magnitude of the maps shown (the colour scale's ends), 0 for none."""
    shown = result.maps[..., [MAP_NAMES.index(name) for name in result.map_names]]
    return float(np.abs(shown).max()) if shown.size else 0.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8."""
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


# The dataset's camera (35 mm lens, 32 mm sensor): the page's viewer opens on the input's view.
FIELD_OF_VIEW = float(np.degrees(2.0 * np.arctan(camera.SENSOR_MM / 2.0 / camera.FOCAL_MM)))


def _centre_of_view(view) -> np.ndarray:
    """Camera centre ``[3]`` of a metadata row (:func:`d2im_tf.inference.reconstruct.view_row_from_pose`)."""
    azimuth, elevation = np.radians(view[0]), np.radians(view[1])
    distance = view[3] * camera.MAX_DISTANCE
    return distance * np.array(
        [np.cos(elevation) * np.cos(azimuth), np.sin(elevation), np.cos(elevation) * np.sin(azimuth)]
    )


def _checked(mesh: trimesh.Trimesh, surface: str) -> trimesh.Trimesh:
    if len(mesh.faces) == 0:
        raise ApiError(
            422,
            f"the model found no {surface} surface in this image (its field does not cross "
            "zero in the box); try an object centred on a white background",
        )
    return mesh


def export_mesh(mesh: trimesh.Trimesh, mesh_format: str) -> bytes:
    """GLB (with smooth vertex normals), OBJ or binary PLY bytes of ``mesh``."""
    if mesh_format == "glb":
        mesh = mesh.copy()
        _ = mesh.vertex_normals  # cached, so the GLB carries them
        return trimesh.exchange.gltf.export_glb(trimesh.Scene(mesh), include_normals=True)
    data = mesh.export(file_type=mesh_format)
    return data.encode() if isinstance(data, str) else data


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
