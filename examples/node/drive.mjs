// Drive a gptrl stateful policy graph from Node.js with onnxruntime-node (docs/stateful.md).
//
//   node drive.mjs POLICY.onnx EPISODE.json > OUTPUTS.json
//
// EPISODE.json: {"batch": B, "steps": [{"obs": [[...S numbers] x B], "reset": [B booleans],
//   "uniform": [[...N numbers in [0, 1)] x B], "sample": [B booleans]}, ...]}; a step without uniform and sample
//   takes greedy actions. OUTPUTS.json: {"steps": [{"action", "log_prob", "dist", "value"}, ...]}, each flat over
//   the rows. The driving loop is the whole contract: start from all-zeros state tensors (a fresh policy), feed
//   obs, reset, uniform and sample, and feed every state_out.X back as state_in.X. Every tensor takes the dtype
//   the graph declares (int64 for token observations and Discrete actions).
import * as ort from "onnxruntime-node";
import { readFileSync } from "node:fs";

const [modelPath, episodePath] = process.argv.slice(2);
const session = await ort.InferenceSession.create(modelPath);
const episode = JSON.parse(readFileSync(episodePath, "utf8"));
const batch = episode.batch;
const inputs = Object.fromEntries(session.inputMetadata.map((input) => [input.name, input]));

const ARRAYS = { float32: Float32Array, int64: BigInt64Array, bool: Uint8Array };
// The input `name` holding `values` (flat), or zeros where `values` is missing.
const tensor = (name, values) => {
  const { type, shape } = inputs[name];
  const dims = shape.map((d) => (d === "batch" ? batch : d));
  const data = new ARRAYS[type](dims.reduce((a, b) => a * b, 1));
  (values ?? []).forEach((v, i) => { data[i] = type === "int64" ? BigInt(v) : Number(v); });
  return new ort.Tensor(type, data, dims);
};
const plain = (t) => Array.from(t.data, Number); // int64 entries (BigInt) as numbers

let state = {};
for (const name of Object.keys(inputs)) {
  if (name.startsWith("state_in.")) state[name] = tensor(name, null);
}

const steps = [];
for (const step of episode.steps) {
  const feeds = { obs: tensor("obs", step.obs.flat()), reset: tensor("reset", step.reset) };
  if ("uniform" in inputs) { // graphs from before gptrl sampled (gptrl-policy-step/1) have no uniform nor sample
    feeds.uniform = tensor("uniform", step.uniform?.flat());
    feeds.sample = tensor("sample", step.sample);
  }
  const out = await session.run({ ...feeds, ...state });
  for (const name of session.outputNames) {
    if (name.startsWith("state_out.")) state[name.replace("state_out.", "state_in.")] = out[name];
  }
  const row = {};
  for (const name of ["action", "log_prob", "dist", "value"]) if (name in out) row[name] = plain(out[name]);
  steps.push(row);
}
process.stdout.write(JSON.stringify({ steps }));
