"""``d2im app``'s page in a real browser (Debian's chromium driven by Playwright) on a tiny random-weight
export: an example becomes a mesh drawn in the canvas, the switch shows the base shape, the GLB
download is the API's mesh, the thin-parts switch asks for the completion and the gaps and cavities
switches for the clean-up off, a transfer runs through its tab, a corrupt file's message appears in the
page, the page fits a phone's width, and it asks nothing of another host."""

import json
import struct

import numpy as np
import pytest
import trimesh

from app_browser import (
    DESKTOP,
    PHONE,
    browser,
    canvas_pixels,
    mesh_fraction,
    open_page,
    reconstruct_example,
    require_chromium,
)
from app_server import EXAMPLE, EXAMPLES, request, served


@pytest.fixture(scope="module")
def app_url(tiny_export):
    with served(tiny_export("full", with_camera=True).path) as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def chromium():
    path = require_chromium()
    with browser(path) as instance:
        yield instance


def select(page, group: str, value: str) -> None:
    page.click(f"#{group} button[data-value='{value}']")


@pytest.mark.slow
def test_example_to_mesh_base_shape_and_glb_download(app_url, chromium, tmp_path):
    page = open_page(chromium, app_url)
    select(page, "resolution", "64")  # no image yet: only selects
    reconstruct_example(page, 1)
    assert page.get_attribute("body", "data-shown") == "detailed"
    detailed = canvas_pixels(page)
    assert mesh_fraction(detailed) > 0.01  # the mesh is drawn: not a blank canvas
    shaded = detailed[np.abs(detailed.astype(int) - [244, 245, 247]).max(axis=-1) > 30].astype(int)
    assert np.median(shaded[:, 0] - shaded[:, 2]) > 10  # the mesh's warm material, not a grey overlay
    assert "on the server" in page.text_content("#stats")
    for image in ("#prepared", "#front", "#back"):  # the network's input and both maps are loaded
        assert page.evaluate(f"document.querySelector('{image}').naturalWidth") == 32

    select(page, "surface", "base")
    page.wait_for_selector("body[data-shown=base][data-state=done]", timeout=60_000)
    base = canvas_pixels(page)
    assert mesh_fraction(base) > 0.01
    assert np.abs(base.astype(int) - detailed.astype(int)).mean() > 1.0  # another surface is shown

    href = page.get_attribute("#download-glb", "href")
    assert href.endswith("/base.glb")
    with page.expect_download() as download:
        page.click("#download-glb")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == f"{EXAMPLE.stem}_base_64.glb"
    data = saved.read_bytes()
    assert data[:4] == b"glTF" and struct.unpack_from("<I", data, 8)[0] == len(data)  # magic, total length
    mesh = trimesh.load(saved, force="mesh")
    result = json.loads(request(app_url + href.rsplit("/", 1)[0])[2])
    assert len(mesh.faces) == result["surfaces"]["base"]["faces"] > 0
    assert result["resolution"] == 64 and result["completion"] is False

    with page.expect_response(lambda response: response.url.endswith("/api/reconstruct")) as response:
        select(page, "completion", "on")  # reconstructs again, with the silhouette completion
    assert response.value.status == 200
    page.wait_for_selector("body[data-state=done]", timeout=120_000)
    completed = json.loads(request(app_url + response.value.headers["location"])[2])
    assert completed["completion"] is True and completed["resolution"] == 64
    assert completed["bridge_gaps"] is True and completed["fill_cavities"] is True
    for group, value, key in (("gaps", "keep", "bridge_gaps"), ("cavities", "keep", "fill_cavities")):
        with page.expect_response(lambda response: response.url.endswith("/api/reconstruct")) as response:
            select(page, group, value)  # reconstructs again, without that clean-up
        assert response.value.status == 200
        page.wait_for_selector("body[data-state=done]", timeout=120_000)
        kept = json.loads(request(app_url + response.value.headers["location"])[2])
        assert kept[key] is False and kept["completion"] is True, group

    assert page.problems == []
    assert all(url.startswith(app_url) or url.startswith(("blob:", "data:")) for url in page.requested), [
        url for url in page.requested if not url.startswith(app_url)
    ]
    page.close()


@pytest.mark.slow
def test_a_transfer_through_its_tab(app_url, chromium, tmp_path):
    """Two files and the front map only: the transfer's mesh is drawn, the images are the result's, the
    GLB download is the API's transfer mesh and the switch offers the target alone."""
    page = open_page(chromium, app_url)
    select(page, "resolution", "64")
    page.click("#mode button[data-value='transfer']")
    assert page.is_visible("#pane-transfer") and not page.is_visible("#drop")
    assert page.is_disabled("#run-transfer")
    page.set_input_files("#transfer-source", str(EXAMPLES / "03001627_syn00005.png"))
    page.set_input_files("#transfer-target", str(EXAMPLES / "02933112_syn00003.png"))
    select(page, "where", "front")
    page.click("#run-transfer")
    page.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=120_000)
    assert page.get_attribute("body", "data-state") == "done", page.text_content("#message")
    assert page.get_attribute("body", "data-shown") == "transfer"
    assert mesh_fraction(canvas_pixels(page)) > 0.01  # not a blank canvas
    for image in ("#prepared", "#image-source", "#front", "#back"):
        assert page.evaluate(f"document.querySelector('{image}').naturalWidth") == 32, image
    assert page.is_visible("#surface button[data-value='target']")

    href = page.get_attribute("#download-glb", "href")
    assert href.endswith("/transfer.glb")
    with page.expect_download() as download:
        page.click("#download-glb")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "02933112_syn00003_transfer_64.glb"
    result = json.loads(request(app_url + href.rsplit("/", 1)[0])[2])
    assert result["kind"] == "transfer" and result["resolution"] == 64
    assert len(trimesh.load(saved, force="mesh").faces) == result["surfaces"]["transfer"]["faces"] > 0

    assert page.problems == []
    assert all(url.startswith(app_url) or url.startswith(("blob:", "data:")) for url in page.requested)
    page.close()


def test_a_corrupt_file_shows_the_servers_message(app_url, chromium):
    page = open_page(chromium, app_url)
    corrupt = EXAMPLE.read_bytes()[:300] + bytes(2000)
    page.set_input_files("#file", files=[{"name": "broken.png", "mimeType": "image/png", "buffer": corrupt}])
    page.wait_for_selector("body[data-state=error]", timeout=30_000)
    message = page.text_content("#message")
    assert page.is_visible("#message") and message.startswith("not a readable PNG image")
    assert request(f"{app_url}/api/health")[0] == 200
    page.close()


def test_the_page_fits_a_phone_and_a_laptop(app_url, chromium):
    for width, height in (PHONE, DESKTOP):
        page = open_page(chromium, app_url, (width, height))
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        box = page.locator("#viewer").bounding_box()
        assert box["width"] >= 0.8 * min(width, 400) and box["height"] >= 0.8 * min(width, 400)
        assert page.is_visible("#drop") and page.locator(".example").count() == 4
        page.close()
