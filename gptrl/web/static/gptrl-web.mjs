// gptrl's MuJoCo envs and stateful-policy driver for the browser (and Node.js): the one place the web page computes
// each env's observation, reward and termination, written from gymnasium 1.4's *_v5.py with their default
// arguments (tests/test_web.py checks them against gymnasium). Nothing here imports a library: the caller passes
// MuJoCo's WebAssembly module (npm `mujoco`) and onnxruntime (npm `onnxruntime-web`), so the same file runs in the
// page and in the Node.js tests.

const clip = (x, lo, hi) => Math.min(Math.max(x, lo), hi);
const sumSquares = (values) => { let s = 0; for (const v of values) s += v * v; return s; };
const between = (x, lo, hi) => lo < x && x < hi;

// MuJoCo's arrays are live views into the wasm heap; each env reads them through `sim` (model, data).
function positions(data, skip) { return Array.from(data.qpos).slice(skip); }

function xVelocity(before, after, dt) { return (after - before) / dt; }

// gymnasium's mass_center (Humanoid): the body-mass weighted mean of xipos, x and y.
function massCenter(model, data) {
  const mass = model.body_mass, xipos = data.xipos;
  let x = 0, y = 0, total = 0;
  for (let b = 0; b < mass.length; b++) {
    x += mass[b] * xipos[3 * b];
    y += mass[b] * xipos[3 * b + 1];
    total += mass[b];
  }
  return [x / total, y / total];
}

// Hopper-v5 and Walker2d-v5 share their observation (qpos[1:], qvel clipped to +-10) and their reward (forward
// velocity + 1 while healthy - 1e-3 |action|^2); they differ in what is healthy.
function planarWalker({ name, healthy }) {
  return {
    name, frameSkip: 4,
    resetNoise: { scale: 5e-3, qvel: "uniform" },
    observe({ data }) {
      return [...positions(data, 1), ...Array.from(data.qvel, (v) => clip(v, -10, 10))];
    },
    before({ data }) { return data.qpos[0]; },
    after(sim, before, action) {
      const forward = xVelocity(before, sim.data.qpos[0], sim.dt);
      const ok = healthy(sim.data);
      return { reward: forward + (ok ? 1 : 0) - 1e-3 * sumSquares(action), terminated: !ok, x: sim.data.qpos[0] };
    },
  };
}

export const ENVS = {
  "Hopper-v5": planarWalker({
    name: "Hopper-v5",
    // healthy_state_range (-100, 100) on state_vector()[2:], z in (0.7, inf), angle in (-0.2, 0.2)
    healthy(data) {
      const qpos = data.qpos, qvel = data.qvel;
      const state = [...Array.from(qpos), ...Array.from(qvel)].slice(2);
      return state.every((v) => between(v, -100, 100)) && between(qpos[1], 0.7, Infinity) &&
        between(qpos[2], -0.2, 0.2);
    },
  }),
  "Walker2d-v5": planarWalker({
    name: "Walker2d-v5",
    healthy(data) { return between(data.qpos[1], 0.8, 2.0) && between(data.qpos[2], -1.0, 1.0); },
  }),
  "HalfCheetah-v5": {
    name: "HalfCheetah-v5", frameSkip: 5,
    resetNoise: { scale: 0.1, qvel: "normal" },
    observe({ data }) { return [...positions(data, 1), ...Array.from(data.qvel)]; },
    before({ data }) { return data.qpos[0]; },
    after(sim, before, action) {
      const forward = xVelocity(before, sim.data.qpos[0], sim.dt);
      return { reward: forward - 0.1 * sumSquares(action), terminated: false, x: sim.data.qpos[0] };
    },
  },
  "Ant-v5": {
    name: "Ant-v5", frameSkip: 5,
    resetNoise: { scale: 0.1, qvel: "normal" },
    // contact forces: cfrc_ext clipped to contact_force_range (-1, 1); the observation holds bodies 1..
    observe({ data }) {
      const forces = Array.from(data.cfrc_ext, (v) => clip(v, -1, 1)).slice(6);
      return [...positions(data, 2), ...Array.from(data.qvel), ...forces];
    },
    before({ data }) { return data.xpos[3]; }, // main_body 1: xpos[1][0]
    after(sim, before, action) {
      const { data } = sim;
      const forward = xVelocity(before, data.xpos[3], sim.dt);
      const state = [...Array.from(data.qpos), ...Array.from(data.qvel)];
      const ok = state.every(Number.isFinite) && 0.2 <= data.qpos[2] && data.qpos[2] <= 1.0;
      const contact = 5e-4 * sumSquares(Array.from(data.cfrc_ext, (v) => clip(v, -1, 1)));
      return { reward: forward + (ok ? 1 : 0) - 0.5 * sumSquares(action) - contact, terminated: !ok,
               x: data.qpos[0] };
    },
  },
  "Humanoid-v5": {
    name: "Humanoid-v5", frameSkip: 5,
    resetNoise: { scale: 1e-2, qvel: "uniform" },
    // qpos[2:], qvel, cinert[1:], cvel[1:], qfrc_actuator[6:], cfrc_ext[1:]
    observe({ data }) {
      return [...positions(data, 2), ...Array.from(data.qvel), ...Array.from(data.cinert).slice(10),
              ...Array.from(data.cvel).slice(6), ...Array.from(data.qfrc_actuator).slice(6),
              ...Array.from(data.cfrc_ext).slice(6)];
    },
    before({ model, data }) { return massCenter(model, data)[0]; },
    after(sim, before, action) {
      const { model, data } = sim;
      const forward = 1.25 * xVelocity(before, massCenter(model, data)[0], sim.dt);
      const ok = between(data.qpos[2], 1.0, 2.0);
      const control = 0.1 * sumSquares(Array.from(data.ctrl)); // gymnasium reads data.ctrl here, not the action
      const contact = Math.min(5e-7 * sumSquares(Array.from(data.cfrc_ext)), 10.0);
      return { reward: forward + (ok ? 5 : 0) - control - contact, terminated: !ok, x: data.qpos[0] };
    },
  },
};

// A small seeded generator for the page's reset noise: mulberry32 (32-bit state), uniforms in [0, 1), normals by
// Box-Muller. It is NOT numpy's PCG64 stream, so the page's seed N gives another initial state than gymnasium's
// reset(seed=N); the tests pass Python's initial qpos and qvel instead (Env.reset(rng, {qpos, qvel})).
export function seededRandom(seed) {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => {
    const u = 1 - uniform(), v = uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  return { uniform, normal };
}

// One MuJoCo env: gymnasium's MujocoEnv step (ctrl, frame_skip mj_steps, mj_rnePostConstraint) and reset
// (mj_resetData, init_qpos/qvel plus the env's noise, mj_forward) around the env's spec above.
export class Env {
  // `mujoco`: the loaded wasm module; `xmlPath`: the MJCF in its virtual file system.
  constructor(mujoco, envId, xmlPath) {
    const spec = ENVS[envId];
    if (!spec) throw new Error(`env ${JSON.stringify(envId)} is not one gptrl's web page computes: ${Object.keys(ENVS).join(", ")}`);
    this.mujoco = mujoco;
    this.spec = spec;
    this.model = mujoco.MjModel.mj_loadXML(xmlPath);
    this.data = new mujoco.MjData(this.model);
    this.dt = this.model.opt.timestep * spec.frameSkip;
    this.initQpos = Float64Array.from(this.data.qpos);
    this.initQvel = Float64Array.from(this.data.qvel);
  }

  // The initial state: `state` ({qpos, qvel}, e.g. Python's after reset(seed)) when given, else the env's reset
  // noise drawn from `rng` (seededRandom). Returns the first observation.
  reset(rng, state = null) {
    const { mujoco, model, data, spec } = this;
    mujoco.mj_resetData(model, data);
    const s = spec.resetNoise.scale;
    const qpos = state?.qpos ?? Array.from(this.initQpos, (q) => q + (2 * rng.uniform() - 1) * s);
    const qvel = state?.qvel ?? Array.from(this.initQvel, (v) =>
      v + (spec.resetNoise.qvel === "normal" ? s * rng.normal() : (2 * rng.uniform() - 1) * s));
    if (qpos.length !== model.nq || qvel.length !== model.nv) {
      throw new Error(`${spec.name}: the initial state has ${qpos.length} qpos and ${qvel.length} qvel, the model ${model.nq} and ${model.nv}`);
    }
    data.qpos.set(qpos);
    data.qvel.set(qvel);
    mujoco.mj_forward(model, data);
    return this.observe();
  }

  observe() { return Float64Array.from(this.spec.observe(this)); }

  // One env step with `action` (env units): {obs, reward, terminated, x}.
  step(action) {
    const { mujoco, model, data, spec } = this;
    const before = spec.before(this);
    data.ctrl.set(Array.from(action));
    for (let i = 0; i < spec.frameSkip; i++) mujoco.mj_step(model, data);
    mujoco.mj_rnePostConstraint(model, data);
    const { reward, terminated, x } = spec.after(this, before, action);
    return { obs: this.observe(), reward, terminated, x };
  }

  delete() { this.data.delete(); this.model.delete(); }
}

// The stateful-v1 loop of docs/stateful.md for one row, greedy (sample false, uniforms zero): all-zeros state to
// begin, every state_out.X fed back as state_in.X, `reset` true on an episode's first step.
export class StatefulPolicy {
  static async create(ort, model, options = {}) {
    const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"], ...options });
    return new StatefulPolicy(ort, session);
  }

  constructor(ort, session) {
    this.ort = ort;
    this.session = session;
    this.inputs = Object.fromEntries(session.inputMetadata.map((input) => [input.name, input]));
    for (const name of ["obs", "reset"]) {
      if (!(name in this.inputs)) throw new Error(`the graph has no input ${JSON.stringify(name)}: not a stateful-v1 graph`);
    }
    if (this.inputs.obs.type !== "float32") throw new Error(`the graph's obs is ${this.inputs.obs.type}; the web page feeds float32 observations`);
    this.state = {};
    for (const name of Object.keys(this.inputs)) {
      if (name.startsWith("state_in.")) this.state[name] = this.zeros(name);
    }
    this.greedy = "uniform" in this.inputs ? { uniform: this.zeros("uniform"), sample: this.zeros("sample") } : {};
    this.starting = true;
  }

  zeros(name) {
    const { type, shape } = this.inputs[name];
    const dims = shape.map((d) => (d === "batch" ? 1 : d));
    const ARRAYS = { float32: Float32Array, int64: BigInt64Array, bool: Uint8Array };
    return new this.ort.Tensor(type, new ARRAYS[type](dims.reduce((a, b) => a * b, 1)), dims);
  }

  // The next call begins a new episode.
  reset() { this.starting = true; }

  // The action (Float32Array, env units) for `obs` and the outputs' value.
  async act(obs) {
    const { ort } = this;
    const feeds = {
      obs: new ort.Tensor("float32", Float32Array.from(obs), [1, obs.length]),
      reset: new ort.Tensor("bool", Uint8Array.of(this.starting ? 1 : 0), [1]),
      ...this.greedy, ...this.state,
    };
    const out = await this.session.run(feeds);
    for (const name of this.session.outputNames) {
      if (name.startsWith("state_out.")) this.state[name.replace("state_out.", "state_in.")] = out[name];
    }
    this.starting = false;
    return { action: Float32Array.from(out.action.data), value: out.value ? Number(out.value.data[0]) : NaN };
  }
}

// A closed-loop episode of at most `maxSteps` steps (gymnasium's TimeLimit: 1000) from `state` or `rng`: the
// return, the length, and the observations and actions when `record` is set.
export async function runEpisode(env, policy, { rng = null, state = null, maxSteps = 1000, record = false } = {}) {
  let obs = env.reset(rng, state);
  policy.reset();
  let total = 0, steps = 0, terminated = false;
  const observations = [], actions = [], rewards = [];
  while (steps < maxSteps && !terminated) {
    const { action } = await policy.act(obs);
    if (record) { observations.push(Array.from(obs)); actions.push(Array.from(action)); }
    const result = env.step(action);
    total += result.reward;
    if (record) rewards.push(result.reward);
    obs = result.obs;
    terminated = result.terminated;
    steps += 1;
  }
  return { return: total, length: steps, terminated, observations, actions, rewards };
}
