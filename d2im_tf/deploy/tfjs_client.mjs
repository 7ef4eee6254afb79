// d2im's TF.js reference client: runs the graph models of a folder written by `d2im convert --to tfjs`
// in Node with @tensorflow/tfjs and its WebAssembly backend (@tensorflow/tfjs-backend-wasm: the .wasm
// binaries ship in the npm package, no native library, no download at run time), as
// d2im_tf/deploy/runtimes.py (TFJSModel) drives it.
//
//   D2IM_TFJS_MODULES=<folder holding node_modules/@tensorflow/tfjs> [D2IM_TFJS_BACKEND=wasm|cpu] \
//     node tfjs_client.mjs CONVERTED_FOLDER
//
// D2IM_TFJS_BACKEND (default wasm) picks the backend; if wasm cannot start, the client falls back to
// the pure-JS cpu backend and says so in its ready message ({backend, fallback}).
//
// Protocol on stdin/stdout, both ways: a little-endian uint32 byte length, a JSON header, then the
// float32 tensors the header lists ({name, shape}) back to back. Requests: {model, tensors} with the
// model's inputs (signature names of d2im_runtime.json); replies: {tensors} with its outputs, or
// {error}. The first message, unrequested, is {ready: true, backend}. End of stdin ends the process.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const modules = process.env.D2IM_TFJS_MODULES;
if (!modules) throw new Error("set D2IM_TFJS_MODULES to the node_modules folder holding @tensorflow/tfjs");
const require = createRequire(path.join(modules, "noop.js"));
const tf = require("@tensorflow/tfjs");

// The requested backend, else cpu: → [backend name, the reason wasm was not used or null].
async function chooseBackend(requested) {
  if (requested === "wasm") {
    try {
      const wasm = require("@tensorflow/tfjs-backend-wasm");
      const dist = path.join(path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json")), "dist");
      wasm.setWasmPaths(dist + path.sep);
      if (await tf.setBackend("wasm")) return ["wasm", null];
      await tf.setBackend("cpu");
      return ["cpu", "the wasm backend did not initialise"];
    } catch (error) {
      await tf.setBackend("cpu");
      return ["cpu", String(error && error.message ? error.message : error).split("\n")[0]];
    }
  }
  if (requested !== "cpu") throw new Error(`unknown backend ${requested} (wasm or cpu)`);
  await tf.setBackend("cpu");
  return ["cpu", null];
}

// A graph model from its model.json and weight shards, read from disk (tf.io.fromMemory: the pure-JS
// package has no file:// loader). A failure names the file: the model.json, or the shards.
async function loadGraphModel(modelJsonPath) {
  const folder = path.dirname(modelJsonPath);
  let file = modelJsonPath;
  try {
    const json = JSON.parse(fs.readFileSync(modelJsonPath, "utf8"));
    const weightSpecs = [];
    const buffers = [];
    for (const group of json.weightsManifest) {
      weightSpecs.push(...group.weights);
      for (const shard of group.paths) {
        file = path.join(folder, shard);
        buffers.push(fs.readFileSync(file));
      }
    }
    file = `${modelJsonPath} with its weight shards`;
    const joined = Buffer.concat(buffers);
    const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);
    const artifacts = { ...json, weightSpecs, weightData };
    delete artifacts.weightsManifest;
    return await tf.loadGraphModel(tf.io.fromMemory(artifacts));
  } catch (error) {
    const message = String(error && error.message ? error.message : error).split("\n")[0];
    throw new Error(`${file}: ${message}`);
  }
}

function send(header, arrays = []) {
  const head = Buffer.from(JSON.stringify(header), "utf8");
  const size = Buffer.alloc(4);
  size.writeUInt32LE(head.length, 0);
  const parts = [size, head];
  for (const array of arrays) parts.push(Buffer.from(array.buffer, array.byteOffset, array.byteLength));
  process.stdout.write(Buffer.concat(parts));
}

// Input/output signature names (global_code, points, …) → the graph's node names.
function nodeNames(entries) {
  return Object.fromEntries(Object.entries(entries).map(([key, value]) => [key, value.name.split(":")[0]]));
}

async function main() {
  const folder = process.argv[2];
  const description = JSON.parse(fs.readFileSync(path.join(folder, "d2im_runtime.json"), "utf8"));
  const [, fallback] = await chooseBackend(process.env.D2IM_TFJS_BACKEND || "wasm");
  const models = {};
  for (const [name, spec] of Object.entries(description.models)) {
    const model = await loadGraphModel(path.join(folder, spec.files.float32));
    models[name] = { model, inputs: nodeNames(model.signature.inputs), outputs: nodeNames(model.signature.outputs) };
  }
  send({ ready: true, backend: tf.getBackend(), fallback, version: tf.version.tfjs });

  let pending = Buffer.alloc(0);
  let busy = Promise.resolve();
  process.stdin.on("data", (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    for (;;) {
      if (pending.length < 4) return;
      const headLength = pending.readUInt32LE(0);
      if (pending.length < 4 + headLength) return;
      const header = JSON.parse(pending.subarray(4, 4 + headLength).toString("utf8"));
      const bytes = header.tensors.reduce((sum, t) => sum + 4 * t.shape.reduce((a, b) => a * b, 1), 0);
      if (pending.length < 4 + headLength + bytes) return;
      const body = Buffer.from(pending.subarray(4 + headLength, 4 + headLength + bytes));  // own copy, aligned
      pending = pending.subarray(4 + headLength + bytes);
      busy = busy.then(() => answer(header, body));
    }
  });

  async function answer(header, body) {
    try {
      const entry = models[header.model];
      if (!entry) throw new Error(`no model ${header.model}`);
      const feeds = {};
      let offset = 0;
      for (const { name, shape } of header.tensors) {
        const count = shape.reduce((a, b) => a * b, 1);
        const values = new Float32Array(body.buffer, body.byteOffset + offset, count);
        feeds[entry.inputs[name]] = tf.tensor(values, shape, "float32");
        offset += 4 * count;
      }
      const names = Object.keys(entry.outputs);
      const results = entry.model.execute(feeds, names.map((name) => entry.outputs[name]));
      const list = Array.isArray(results) ? results : [results];
      const arrays = await Promise.all(list.map((tensor) => tensor.data()));
      send({ tensors: names.map((name, k) => ({ name, shape: list[k].shape })) }, arrays);
      tf.dispose([...Object.values(feeds), ...list]);
    } catch (error) {
      send({ error: String(error && error.stack ? error.stack.split("\n")[0] : error) });
    }
  }
}

main().catch((error) => {
  send({ error: String(error && error.message ? error.message : error) });
  process.exitCode = 1;
});
