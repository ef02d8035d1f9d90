// Drive a gptrl stateful policy graph from Node.js with onnxruntime-node (docs/stateful.md).
//
//   node drive.mjs POLICY.onnx EPISODE.json > ACTIONS.json
//
// EPISODE.json: {"batch": B, "steps": [{"obs": [[...S floats] x B], "reset": [B booleans]}, ...]}.
// The driving loop is the whole contract: start from all-zeros state tensors (a fresh policy), feed obs and
// reset (and uniform / sample: here greedy actions), and feed every state_out.X back as state_in.X.
import * as ort from "onnxruntime-node";
import { readFileSync } from "node:fs";

const [modelPath, episodePath] = process.argv.slice(2);
const session = await ort.InferenceSession.create(modelPath);
const episode = JSON.parse(readFileSync(episodePath, "utf8"));
const batch = episode.batch;

const zeros = (input) => {
  const dims = input.shape.map((d) => (d === "batch" ? batch : d));
  return new ort.Tensor("float32", new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
};
let state = {};
const greedy = { sample: new ort.Tensor("bool", new Uint8Array(batch), [batch]) };
for (const input of session.inputMetadata) {
  if (input.name.startsWith("state_in.")) state[input.name] = zeros(input);
  if (input.name === "uniform") greedy.uniform = zeros(input);
}

const actions = [];
for (const step of episode.steps) {
  const obs = new ort.Tensor("float32", Float32Array.from(step.obs.flat()), [batch, step.obs[0].length]);
  const reset = new ort.Tensor("bool", Uint8Array.from(step.reset.map(Number)), [batch]);
  const out = await session.run({ obs, reset, ...greedy, ...state });
  for (const name of session.outputNames) {
    if (name.startsWith("state_out.")) state[name.replace("state_out.", "state_in.")] = out[name];
  }
  actions.push(Array.from(out.action.data));
}
process.stdout.write(JSON.stringify({ actions }));
