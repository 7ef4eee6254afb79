// The page of `d2im app`: sends an image to POST /api/reconstruct, shows the returned GLB in a three.js
// viewer, then reads /api/results/<id> for the network's input, the displacement maps, the other
// surface and the downloads. Everything comes from this server (three.js is vendored under /static).
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";

const $ = (id) => document.getElementById(id);
const state = { file: null, name: "", result: null, surface: "detailed", resolution: "128", meshes: {}, busy: false };

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

function post(form, onUpload) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/reconstruct");
    xhr.responseType = "arraybuffer";
    xhr.upload.onprogress = (event) => event.lengthComputable && onUpload(event.loaded / event.total);
    xhr.upload.onload = () => onUpload(1);
    xhr.onload = xhr.onerror = () => resolve(xhr);
    xhr.send(form);
  });
}

async function reconstruct() {
  if (!state.file || state.busy) return;
  state.busy = true;
  document.body.dataset.state = "working";
  $("message").hidden = true;
  const started = performance.now();
  let phase = "uploading";
  const tick = setInterval(() => {
    if (phase === "working") setProgress(`reconstructing at ${state.resolution}³… ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }, 100);
  setProgress("uploading…", 0);
  const form = new FormData();
  form.append("image", state.file, state.name);
  form.append("resolution", state.resolution);
  form.append("surface", state.surface);
  try {
    const xhr = await post(form, (fraction) => {
      if (fraction >= 1) { phase = "working"; setProgress(`reconstructing at ${state.resolution}³…`); }
      else setProgress(`uploading… ${Math.round(fraction * 100)}%`, fraction);
    });
    if (xhr.status !== 200) { showError(errorOf(xhr)); return; }
    phase = "loading";
    setProgress("loading the mesh…");
    const id = xhr.getResponseHeader("X-Result-Id");
    state.meshes = { [state.surface]: await meshFromGlb(xhr.response) };
    const result = await (await fetch(`/api/results/${id}`)).json();
    state.result = result;
    lookFrom(result.camera.position);
    show(state.meshes[state.surface]);
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
  }
}

function setStats(timing) {
  const info = state.result.surfaces[state.surface];
  const faces = info.faces ? `${info.faces.toLocaleString("en")} faces` : "";
  $("stats").textContent = [timing, faces].filter(Boolean).join(" · ");
}

function showResult(result) {
  $("prepared").src = result.images.input;
  $("front").src = result.images.front;
  $("back").src = result.images.back;
  $("inputs").hidden = false;
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

async function switchSurface(surface) {
  state.surface = surface;
  if (!state.result) return;
  if (!state.meshes[surface]) {
    document.body.dataset.state = "working";
    setProgress(`making the ${surface === "base" ? "base shape" : "detailed surface"}…`);
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

segmented("resolution", (value) => { state.resolution = value; reconstruct(); });
segmented("surface", (value) => switchSurface(value));

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

async function init() {
  try {
    const health = await (await fetch("/api/health")).json();
    $("model").textContent = `model ${health.model} · ${health.image_size}² input`;
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
      choose(blob, example.name);
    });
    $("examples").appendChild(button);
  }
  document.body.dataset.ready = "true";
}
init();
