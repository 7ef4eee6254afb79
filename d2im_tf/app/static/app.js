// The page of `d2im app`: sends an image to POST /api/reconstruct (or two to /api/transfer or
// /api/paste, the other tabs), shows the returned GLB in a three.js viewer, then reads
// /api/results/<id> for the images, the other surface and the downloads. Everything comes from this
// server (three.js is vendored under /static).
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";

const $ = (id) => document.getElementById(id);
const state = {
  mode: "reconstruct", file: null, name: "", result: null, surface: "detailed", resolution: "128", completion: "off", meshes: {}, busy: false,
  gaps: "bridge", cavities: "fill",
  where: "both",
  slots: { transfer: { source: null, target: null }, paste: { target: null, logo: null } }, // {blob, name, width, height}
  armed: { transfer: "source", paste: "target" }, // the slot an example fills
  sizeEdited: false,
};
const SLOT_ORDER = { transfer: ["source", "target"], paste: ["target", "logo"] };
const IMAGE_IDS = { input: "prepared", front: "front", back: "back" }; // others: image-<name>

// ---- viewer -------------------------------------------------------------------------------------
const viewer = $("viewer");
const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
renderer.setClearColor(0xf4f5f7);
viewer.appendChild(renderer.domElement);
const scene = new THREE.Scene();
const camera = new THREE.PerspectiveCamera(49.1, 1, 0.01, 20);
camera.position.set(1.2, 0.8, 1.6);
const controls = new OrbitControls(camera, renderer.domElement);
controls.enableDamping = true;
scene.add(new THREE.HemisphereLight(0xffffff, 0x8d8f99, 1.6));
const key = new THREE.DirectionalLight(0xffffff, 1.8);
scene.add(camera);
camera.add(key);
key.position.set(0.6, 1.0, 0.4); // a light that follows the camera: every side shades readably
const material = new THREE.MeshStandardMaterial({ color: 0xc9a27e, roughness: 0.55, metalness: 0.0, side: THREE.DoubleSide });
let shown = null;

function resize() {
  const { clientWidth: w, clientHeight: h } = viewer;
  renderer.setSize(w, h, false);
  camera.aspect = w / Math.max(h, 1);
  camera.updateProjectionMatrix();
}
new ResizeObserver(resize).observe(viewer);
renderer.setAnimationLoop(() => { controls.update(); renderer.render(scene, camera); });

async function meshFromGlb(buffer) {
  const gltf = await new GLTFLoader().parseAsync(buffer, "");
  let geometry = null;
  gltf.scene.traverse((node) => { if (node.isMesh && !geometry) geometry = node.geometry; });
  if (!geometry) throw new Error("the GLB holds no mesh");
  if (!geometry.attributes.normal) geometry.computeVertexNormals();
  return new THREE.Mesh(geometry, material);
}

function show(mesh) {
  if (shown) scene.remove(shown);
  shown = mesh;
  scene.add(mesh);
  $("placeholder").hidden = true;
  document.body.dataset.shown = state.surface;
}

function lookFrom(position) {
  camera.position.set(...position);
  controls.target.set(0, 0, 0);
  controls.update();
}

// ---- requests -------------------------------------------------------------------------------------
function setProgress(text, fraction) {
  $("progress").hidden = text === null;
  $("progress-text").textContent = text || "";
  const bar = $("progress").querySelector(".bar");
  bar.classList.toggle("indeterminate", fraction === undefined);
  bar.firstElementChild.style.width = fraction === undefined ? "" : `${Math.round(fraction * 100)}%`;
}

function showError(text) {
  $("message").textContent = text;
  $("message").hidden = false;
  document.body.dataset.state = "error";
}

function errorOf(xhr) {
  try {
    const body = JSON.parse(new TextDecoder().decode(xhr.response));
    if (body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return xhr.status ? `the server answered ${xhr.status}` : "the server could not be reached";
}

function post(url, form, onUpload) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.responseType = "arraybuffer";
    xhr.upload.onprogress = (event) => event.lengthComputable && onUpload(event.loaded / event.total);
    xhr.upload.onload = () => onUpload(1);
    xhr.onload = xhr.onerror = () => resolve(xhr);
    xhr.send(form);
  });
}

// One request that answers with a mesh: `surface` is the one it returns, `working` what the page says meanwhile.
async function submit(url, form, surface, working) {
  if (state.busy) return;
  state.busy = true;
  setRunButtons();
  document.body.dataset.state = "working";
  $("message").hidden = true;
  const started = performance.now();
  let phase = "uploading";
  const tick = setInterval(() => {
    if (phase === "working") setProgress(`${working} ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }, 100);
  setProgress("uploading…", 0);
  form.append("resolution", state.resolution);
  try {
    const xhr = await post(url, form, (fraction) => {
      if (fraction >= 1) { phase = "working"; setProgress(working); }
      else setProgress(`uploading… ${Math.round(fraction * 100)}%`, fraction);
    });
    if (xhr.status !== 200) { showError(errorOf(xhr)); return; }
    phase = "loading";
    setProgress("loading the mesh…");
    const id = xhr.getResponseHeader("X-Result-Id");
    const mesh = await meshFromGlb(xhr.response);
    const result = await (await fetch(`/api/results/${id}`)).json();
    state.result = result;
    state.surface = surface;
    state.meshes = { [surface]: mesh };
    setSurfaceButtons(result);
    lookFrom(result.camera.position);
    show(mesh);
    const total = (performance.now() - started) / 1000;
    setStats(`${xhr.getResponseHeader("X-Server-Time")} s on the server, ${total.toFixed(2)} s in all`);
    showResult(result);
    document.body.dataset.state = "done";
  } catch (error) {
    showError(`could not show the result: ${error.message}`);
  } finally {
    clearInterval(tick);
    setProgress(null);
    state.busy = false;
    setRunButtons();
  }
}

function reconstruct() {
  if (!state.file || state.busy) return;
  const surface = ["detailed", "base"].includes(state.surface) ? state.surface : "detailed";
  const form = new FormData();
  form.append("image", state.file, state.name);
  form.append("surface", surface);
  form.append("completion", state.completion);
  form.append("gaps", state.gaps);
  form.append("cavities", state.cavities);
  submit("/api/reconstruct", form, surface, `reconstructing at ${state.resolution}³…`);
}

function transfer() {
  const { source, target } = state.slots.transfer;
  if (!source || !target || state.busy) return;
  state.name = target.name;
  const form = new FormData();
  form.append("source", source.blob, source.name);
  form.append("target", target.blob, target.name);
  form.append("where", state.where);
  submit("/api/transfer", form, "transfer", `transferring at ${state.resolution}³…`);
}

function paste() {
  const { target, logo } = state.slots.paste;
  if (!target || !logo || state.busy) return;
  state.name = target.name;
  const form = new FormData();
  form.append("target", target.blob, target.name);
  form.append("logo", logo.blob, logo.name);
  for (const name of ["x", "y", "size"]) {
    const value = $(`paste-${name}`).value.trim();
    if (value !== "") form.append(name, value);
  }
  submit("/api/paste", form, "paste", `pasting at ${state.resolution}³…`);
}

function setStats(timing) {
  const info = state.result.surfaces[state.surface];
  const faces = info.faces ? `${info.faces.toLocaleString("en")} faces` : "";
  $("stats").textContent = [timing, faces].filter(Boolean).join(" · ");
}

function showResult(result) {
  const inputs = $("inputs");
  inputs.replaceChildren();
  for (const [name, url] of Object.entries(result.images)) {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.id = IMAGE_IDS[name] || `image-${name}`;
    image.src = url;
    image.alt = result.captions[name];
    const caption = document.createElement("figcaption");
    caption.textContent = result.captions[name];
    figure.append(image, caption);
    inputs.appendChild(figure);
  }
  inputs.style.gridTemplateColumns = `repeat(${Object.keys(result.images).length}, 1fr)`;
  inputs.hidden = false;
  const scale = $("map-scale");
  scale.hidden = false;
  scale.textContent = `maps: blue −${result.map_scale.toFixed(3)}, white 0, red +${result.map_scale.toFixed(3)} (SDF units)` +
    (result.warnings.length ? ` · note: ${result.warnings.join("; ")}` : "");
  setDownloads();
}

function setDownloads() {
  const files = state.result.surfaces[state.surface].files;
  const stem = (state.name.replace(/\.[^.]*$/, "") || "mesh") + `_${state.surface}_${state.result.resolution}`;
  for (const format of ["glb", "obj", "ply"]) {
    const link = $(`download-${format}`);
    link.href = files[format];
    link.download = `${stem}.${format}`;
  }
  $("downloads").hidden = false;
}

// The surface switch offers the result's surfaces (detailed/base; transfer or paste/target alone).
function setSurfaceButtons(result) {
  const group = $("surface");
  group.replaceChildren();
  for (const [surface, info] of Object.entries(result.surfaces)) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.value = surface;
    button.setAttribute("aria-pressed", String(surface === state.surface));
    const [before, after] = info.label.split("f_B");
    button.append(before);
    if (after !== undefined) {
      const sub = document.createElement("sub");
      sub.textContent = "B";
      button.append("f", sub, after);
    }
    group.appendChild(button);
  }
}

async function switchSurface(surface) {
  state.surface = surface;
  if (!state.result) return;
  if (!state.meshes[surface]) {
    document.body.dataset.state = "working";
    setProgress(`making the ${state.result.surfaces[surface].label.replace("f_B", "").trim().toLowerCase()}…`);
    try {
      const response = await fetch(state.result.surfaces[surface].files.glb);
      if (!response.ok) { showError((await response.json()).error); return; }
      state.meshes[surface] = await meshFromGlb(await response.arrayBuffer());
      state.result = await (await fetch(`/api/results/${state.result.id}`)).json();
      setStats(`${response.headers.get("X-Server-Time")} s on the server`);
    } catch (error) {
      showError(`could not show the ${surface} surface: ${error.message}`);
      return;
    } finally {
      setProgress(null);
    }
  } else {
    setStats(`${state.result.surfaces[surface].seconds.toFixed(2)} s on the server`);
  }
  show(state.meshes[surface]);
  setDownloads();
  document.body.dataset.state = "done";
}

// ---- controls -------------------------------------------------------------------------------------
function segmented(id, onChange) {
  const group = $(id);
  group.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button || state.busy) return;
    for (const other of group.querySelectorAll("button")) other.setAttribute("aria-pressed", String(other === button));
    onChange(button.dataset.value);
  });
}

segmented("resolution", (value) => { state.resolution = value; if (state.mode === "reconstruct") reconstruct(); });
segmented("completion", (value) => { state.completion = value; reconstruct(); });
segmented("gaps", (value) => { state.gaps = value; reconstruct(); });
segmented("cavities", (value) => { state.cavities = value; reconstruct(); });
segmented("surface", (value) => switchSurface(value));
segmented("where", (value) => { state.where = value; });

function choose(file, name) {
  state.file = file;
  state.name = name || file.name || "image";
  state.result = null;
  reconstruct();
}

$("file").addEventListener("change", (event) => event.target.files[0] && choose(event.target.files[0]));
const drop = $("drop");
for (const type of ["dragenter", "dragover"]) drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) choose(file);
});
drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("file").click(); });

// ---- the tabs and the applications' inputs ----------------------------------------------------------
function setMode(mode) {
  state.mode = mode;
  for (const tab of $("mode").querySelectorAll("button")) tab.setAttribute("aria-selected", String(tab.dataset.value === mode));
  for (const name of ["reconstruct", "transfer", "paste"]) $(`pane-${name}`).hidden = name !== mode;
  $("examples-hint").hidden = mode === "reconstruct";
  document.body.dataset.mode = mode;
  markArmed();
}

$("mode").addEventListener("click", (event) => {
  const tab = event.target.closest("button");
  if (tab && !tab.disabled) setMode(tab.dataset.value);
});

function slotElement(mode, slot) {
  return document.querySelector(`.slot[data-mode="${mode}"][data-slot="${slot}"]`);
}

function markArmed() {
  for (const element of document.querySelectorAll(".slot")) {
    element.classList.toggle("armed", element.dataset.slot === state.armed[element.dataset.mode]);
  }
}

async function fillSlot(mode, slot, blob, name) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch (error) {
    bitmap = null; // the server says what is wrong with it when it is sent
  }
  state.slots[mode][slot] = { blob, name: name || blob.name || "image", width: bitmap?.width, height: bitmap?.height };
  const element = slotElement(mode, slot);
  const image = element.querySelector("img");
  if (image.dataset.url) URL.revokeObjectURL(image.dataset.url);
  image.dataset.url = URL.createObjectURL(blob);
  image.src = image.dataset.url;
  image.hidden = false;
  element.querySelector(".empty").hidden = true;
  const order = SLOT_ORDER[mode];
  state.armed[mode] = order[(order.indexOf(slot) + 1) % order.length];
  markArmed();
  if (mode === "paste") placementDefaults(slot);
  setRunButtons();
}

for (const element of document.querySelectorAll(".slot")) {
  const { mode, slot } = element.dataset;
  element.querySelector("input[type=file]").addEventListener("change", (event) => {
    if (event.target.files[0]) fillSlot(mode, slot, event.target.files[0]);
  });
  element.addEventListener("click", () => { state.armed[mode] = slot; markArmed(); });
  element.addEventListener("dragover", (event) => { event.preventDefault(); element.classList.add("over"); });
  element.addEventListener("dragleave", () => element.classList.remove("over"));
  element.addEventListener("drop", (event) => {
    event.preventDefault();
    element.classList.remove("over");
    if (event.dataTransfer.files[0]) fillSlot(mode, slot, event.dataTransfer.files[0]);
  });
}

// Paste: x, y default to the target's centre, the size to a third of its shorter side (or the logo's own).
function placementDefaults(slot) {
  const { target, logo } = state.slots.paste;
  if (slot === "target" && target?.width) {
    $("paste-x").value = Math.round(target.width / 2);
    $("paste-y").value = Math.round(target.height / 2);
  }
  if (!state.sizeEdited && target?.width && logo?.width) {
    $("paste-size").value = Math.min(Math.max(logo.width, logo.height), Math.round(Math.min(target.width, target.height) / 3));
  }
  drawLogoBox();
}

function drawLogoBox() {
  const { target, logo } = state.slots.paste;
  const box = $("logo-box");
  const [x, y, size] = ["x", "y", "size"].map((name) => parseFloat($(`paste-${name}`).value));
  if (!target?.width || !logo?.width || !Number.isFinite(x) || !Number.isFinite(y)) { box.hidden = true; return; }
  const longer = Math.max(logo.width, logo.height);
  const scale = (Number.isFinite(size) ? size : longer) / longer;
  const [w, h] = [logo.width * scale, logo.height * scale];
  box.style.left = `${((x - w / 2) / target.width) * 100}%`;
  box.style.top = `${((y - h / 2) / target.height) * 100}%`;
  box.style.width = `${(w / target.width) * 100}%`;
  box.style.height = `${(h / target.height) * 100}%`;
  box.hidden = false;
}

$("paste-target-preview").addEventListener("click", (event) => {
  const target = state.slots.paste.target;
  const image = event.currentTarget;
  if (!target?.width || !image.clientWidth) return;
  $("paste-x").value = Math.round((event.offsetX / image.clientWidth) * target.width);
  $("paste-y").value = Math.round((event.offsetY / image.clientHeight) * target.height);
  drawLogoBox();
  setRunButtons();
});
for (const name of ["x", "y", "size"]) {
  $(`paste-${name}`).addEventListener("input", () => {
    if (name === "size") state.sizeEdited = true;
    drawLogoBox();
    setRunButtons();
  });
}

function setRunButtons() {
  const { source, target } = state.slots.transfer;
  $("run-transfer").disabled = state.busy || !source || !target;
  const pasteReady = state.slots.paste.target && state.slots.paste.logo && $("paste-x").value !== "" && $("paste-y").value !== "";
  $("run-paste").disabled = state.busy || !pasteReady;
}
$("run-transfer").addEventListener("click", transfer);
$("run-paste").addEventListener("click", paste);

async function init() {
  try {
    const health = await (await fetch("/api/health")).json();
    $("model").textContent = `model ${health.model} · ${health.image_size}² input`;
    if (!health.applications) {
      for (const tab of $("mode").querySelectorAll("button:not([data-value=reconstruct])")) {
        tab.disabled = true;
        tab.title = "this server's model cannot run transfer or paste";
      }
    }
  } catch (error) {
    $("model").textContent = "the server is not answering";
  }
  const { examples } = await (await fetch("/api/examples")).json();
  for (const example of examples) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.title = example.name;
    const image = document.createElement("img");
    image.src = example.url;
    image.alt = example.name;
    button.appendChild(image);
    button.addEventListener("click", async () => {
      if (state.busy) return;
      const blob = await (await fetch(example.url)).blob();
      if (state.mode === "reconstruct") choose(blob, example.name);
      else fillSlot(state.mode, state.armed[state.mode], blob, example.name);
    });
    $("examples").appendChild(button);
  }
  setMode("reconstruct");
  document.body.dataset.ready = "true";
}
init();
