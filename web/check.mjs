// The Node.js half of tests/test_web.py: runs gptrl-web.mjs (the page's env and policy module) on MuJoCo's wasm
// build and onnxruntime-web, from the initial states Python hands over.
//
//   node check.mjs SITE_DIR CASES.json > RESULTS.json
//
// CASES.json: {"open_loop": [{"qpos", "qvel", "actions": [[...]]}], "closed_loop": [{"qpos", "qvel", "max_steps"}]}
// RESULTS.json: {"open_loop": [{"observations", "rewards", "terminated"}], "closed_loop": [{"return", "length"}]}
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import loadMujoco from "mujoco";
import * as ort from "onnxruntime-web";

const [site, casesPath] = process.argv.slice(2);
const meta = JSON.parse(readFileSync(join(site, "site.json"), "utf8"));
const { Env, StatefulPolicy, runEpisode } = await import(pathToFileURL(resolve(site, "gptrl-web.mjs")).href);
const cases = JSON.parse(readFileSync(casesPath, "utf8"));

const mujoco = await loadMujoco();
mujoco.FS.writeFile(`/${meta.xml}`, readFileSync(join(site, meta.xml), "utf8"));
const env = new Env(mujoco, meta.env_id, `/${meta.xml}`);

const openLoop = (cases.open_loop ?? []).map(({ qpos, qvel, actions }) => {
  const observations = [Array.from(env.reset(null, { qpos, qvel }))], rewards = [], terminated = [];
  for (const action of actions) {
    const r = env.step(action);
    observations.push(Array.from(r.obs));
    rewards.push(r.reward);
    terminated.push(r.terminated);
  }
  return { observations, rewards, terminated };
});

const closedLoop = [];
if ((cases.closed_loop ?? []).length) {
  ort.env.wasm.numThreads = 1;
  const policy = await StatefulPolicy.create(ort, readFileSync(join(site, meta.policy)));
  for (const { qpos, qvel, max_steps: maxSteps } of cases.closed_loop) {
    const r = await runEpisode(env, policy, { state: { qpos, qvel }, maxSteps });
    closedLoop.push({ return: r.return, length: r.length, terminated: r.terminated });
  }
}
env.delete();
process.stdout.write(JSON.stringify({ open_loop: openLoop, closed_loop: closedLoop }));
