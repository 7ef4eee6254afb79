"""The loaded model and what it made: one :class:`Service` per server.

The SavedModel is loaded once (:class:`d2im_tf.inference.reconstruct.Reconstructor`, shared by the
resolutions offered). :meth:`Service.reconstruct` runs the reconstruction ``d2im reconstruct`` runs
and keeps the result under a random id in a bounded store (the oldest are dropped): the network's
input, the displacement maps and the meshes, exported on request as GLB, OBJ or PLY. The other
surface (the base field f_B's when the detailed one was asked, or the reverse) is made from the
stored network input when first asked for; the input reaches the network unchanged the second
time (a square of the model's size is not resized), so both surfaces come from one encoding.
"""

from __future__ import annotations

import io
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import trimesh
from PIL import Image

from d2im_tf.app.validation import RESOLUTIONS, ApiError
from d2im_tf.errors import UserError
from d2im_tf.geometry import camera
from d2im_tf.inference.preview import diverging_colours
from d2im_tf.inference.reconstruct import Reconstructor, input_warnings

# Results kept for the page's later requests (maps, the other surface, downloads): a page needs its
# last one; each holds its meshes (~1.5 MB at 128³), and long-lived meshes fragment the heap.
MAX_RESULTS = 8
MAP_NAMES = ("front", "back")


@dataclass
class Result:
    """One uploaded image's reconstruction: ``source`` the uploaded pixels (the other surface is made
    from them, through the same matting and re-framing), ``image`` the network's input uint8 ``[S, S, 3]``, ``maps``
    float32 ``[S, S, 2]`` (front, back; SDF units), ``meshes`` per surface made so far, the view's camera
    centre in the mesh's frame, and seconds per surface."""

    id: str
    resolution: int
    source: np.ndarray
    image: np.ndarray
    maps: np.ndarray
    camera_position: list
    warnings: list
    meshes: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


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

    def reconstruct(self, pixels: np.ndarray, resolution: int, surface: str) -> Result:
        """Reconstruct ``pixels`` (uint8 image) into ``surface`` and store the result (blocking)."""
        start = time.perf_counter()
        made = self._by_resolution[resolution].reconstruct(pixels, surface=surface)
        image = np.round(np.clip(made.image, 0.0, 1.0) * 255).astype(np.uint8)  # [S, S, 3]
        position = camera.camera_centre(*made.pose) if made.pose is not None else _centre_of_view(made.view)
        result = Result(
            secrets.token_hex(8),
            resolution,
            pixels,
            image,
            made.maps,
            [float(v) for v in position],
            input_warnings(made.image),
        )
        result.meshes[surface] = _checked(made.mesh, surface)
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
            raise ApiError(404, f"no such result (results are kept for the last {self._max_results} reconstructions)")
        return result

    def surface(self, result: Result, surface: str) -> trimesh.Trimesh:
        """``result``'s mesh of ``surface``, made now from its uploaded image if not yet (blocking)."""
        if surface not in result.meshes:
            start = time.perf_counter()
            made = self._by_resolution[result.resolution].reconstruct(result.source, surface=surface)
            mesh = _checked(made.mesh, surface)
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
        blue–white–red scale of :func:`d2im_tf.inference.preview.diverging_colours`, shared by both maps."""
        if name == "input":
            return png_bytes(result.image)
        scale = float(np.abs(result.maps).max()) if result.maps.size else 1.0
        return png_bytes(diverging_colours(result.maps[..., MAP_NAMES.index(name)], scale))

    def describe(self, result: Result) -> dict:
        """The JSON the page reads after a reconstruction: files, sizes, timings, camera, warnings."""
        base = f"/api/results/{result.id}"
        return {
            "id": result.id,
            "model": self.model_name,
            "resolution": result.resolution,
            "image_size": self.image_size,
            "warnings": result.warnings,
            "camera": {"position": result.camera_position, "fov_degrees": FIELD_OF_VIEW},
            "map_scale": float(np.abs(result.maps).max()) if result.maps.size else 0.0,
            "images": {name: f"{base}/{name}.png" for name in ("input", *MAP_NAMES)},
            "surfaces": {
                surface: {
                    "made": surface in result.meshes,
                    "seconds": result.seconds.get(surface),
                    "vertices": len(result.meshes[surface].vertices) if surface in result.meshes else None,
                    "faces": len(result.meshes[surface].faces) if surface in result.meshes else None,
                    "files": {fmt: f"{base}/{surface}.{fmt}" for fmt in ("glb", "obj", "ply")},
                }
                for surface in ("detailed", "base")
            },
        }


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
