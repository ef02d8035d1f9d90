// The page of `gptrl web`: MuJoCo (wasm) steps the env of gptrl-web.mjs, onnxruntime-web (wasm, one thread) runs the
// bundle's stateful graph, three.js draws MuJoCo's geoms. URL parameters: seed=N (the first episode's reset noise),
// steps=N (stop after N steps), fast=1 (step as fast as the machine allows instead of in real time).
import * as ort from "./ort.wasm.min.mjs";
import loadMujoco from "./mujoco.js";
import * as THREE from "./three.module.js";
import { Env, StatefulPolicy, seededRandom } from "./gptrl-web.mjs";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const status = { ready: false, steps: 0, episodeSteps: 0, episodes: 0, return: 0, returns: [], stepsPerSecond: 0,
                 error: null };
window.gptrlStatus = status; // read by the browser test

function fail(error) {
  status.error = String(error?.stack ?? error);
  $("state").textContent = `error: ${error?.message ?? error}`;
  throw error;
}

async function fetchOk(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response;
}

// One three.js mesh per MuJoCo geom, posed from geom_xpos / geom_xmat every frame.
function buildScene(model, canvas) {
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xdfe6ee);
  scene.fog = new THREE.Fog(0xdfe6ee, 10, 40); // hides the far grid lines
  const camera = new THREE.PerspectiveCamera(45, 1, 0.05, 200);
  camera.up.set(0, 0, 1); // MuJoCo is z-up
  scene.add(new THREE.HemisphereLight(0xffffff, 0x667788, 1.6));
  const sun = new THREE.DirectionalLight(0xffffff, 1.8);
  sun.position.set(3, -4, 8);
  scene.add(sun);

  const types = model.geom_type, size = model.geom_size, rgba = model.geom_rgba, matid = model.geom_matid;
  const matRgba = model.mat_rgba;
  const meshes = [];
  for (let g = 0; g < model.ngeom; g++) {
    const s = [size[3 * g], size[3 * g + 1], size[3 * g + 2]];
    // MuJoCo draws a geom in its own rgba unless that is the default grey and it has a material.
    const own = Array.from(rgba.slice(4 * g, 4 * g + 4)), m = matid[g];
    const grey = own.every((v, i) => Math.abs(v - (i < 3 ? 0.5 : 1)) < 1e-6);
    const c = m >= 0 && grey ? Array.from(matRgba.slice(4 * m, 4 * m + 4)) : own;
    if (c[3] === 0) { meshes.push(null); continue; }
    let geometry;
    switch (types[g]) {
      case 0: geometry = new THREE.PlaneGeometry(2 * (s[0] || 50), 2 * (s[1] || 50), 40, 40); break;
      case 2: geometry = new THREE.SphereGeometry(s[0], 24, 16); break;
      case 3: geometry = new THREE.CapsuleGeometry(s[0], 2 * s[1], 8, 16).rotateX(Math.PI / 2); break;
      case 4: geometry = new THREE.SphereGeometry(1, 24, 16).scale(s[0], s[1], s[2]); break;
      case 5: geometry = new THREE.CylinderGeometry(s[0], s[0], 2 * s[1], 20).rotateX(Math.PI / 2); break;
      case 6: geometry = new THREE.BoxGeometry(2 * s[0], 2 * s[1], 2 * s[2]); break;
      default: meshes.push(null); continue; // height fields and meshes: none in the five envs
    }
    const plane = types[g] === 0;
    const material = plane
      ? new THREE.MeshStandardMaterial({ color: 0x8fa3b8, wireframe: false, roughness: 0.9 })
      : new THREE.MeshStandardMaterial({ color: new THREE.Color(c[0], c[1], c[2]), roughness: 0.55 });
    const mesh = new THREE.Mesh(geometry, material);
    mesh.matrixAutoUpdate = false;
    scene.add(mesh);
    if (plane) {
      const grid = new THREE.GridHelper(100, 100, 0x6f8296, 0x6f8296);
      grid.rotateX(Math.PI / 2);
      grid.position.z = 0.002;
      scene.add(grid);
    }
    meshes.push(mesh);
  }

  const resize = () => {
    const { clientWidth: w, clientHeight: h } = canvas;
    renderer.setSize(w, h, false);
    camera.aspect = w / h;
    camera.updateProjectionMatrix();
  };
  resize();
  window.addEventListener("resize", resize);

  return (data, view) => {
    const xpos = data.geom_xpos, xmat = data.geom_xmat;
    for (let g = 0; g < meshes.length; g++) {
      const mesh = meshes[g];
      if (!mesh) continue;
      const r = xmat.subarray(9 * g, 9 * g + 9), p = xpos.subarray(3 * g, 3 * g + 3);
      mesh.matrix.set(r[0], r[1], r[2], p[0], r[3], r[4], r[5], p[1], r[6], r[7], r[8], p[2], 0, 0, 0, 1);
    }
    const x = data.xpos[3], y = data.xpos[4]; // body 1, the torso
    camera.position.set(x + view.distance * 0.35, y - view.distance, view.height);
    camera.lookAt(x, y, view.lookZ);
    renderer.render(scene, camera);
  };
}

async function main() {
  const site = await (await fetchOk("site.json")).json();
  $("title").textContent = `${site.bundle}: ${site.env_id}`;
  $("about").textContent = `gptrl ${site.gptrl_version} · stateful graph ${site.policy} (kv ${site.kv}) on ` +
    `onnxruntime-web ${site.npm["onnxruntime-web"]} · MuJoCo wasm (npm mujoco ${site.npm.mujoco})`;
  const mujoco = await loadMujoco();
  mujoco.FS.writeFile(`/${site.xml}`, await (await fetchOk(site.xml)).text());
  const env = new Env(mujoco, site.env_id, `/${site.xml}`);
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL("./", location.href).href;
  const policy = await StatefulPolicy.create(ort, new Uint8Array(await (await fetchOk(site.policy)).arrayBuffer()));
  const draw = buildScene(env.model, $("view"));

  const fast = params.get("fast") === "1";
  const stopAt = params.has("steps") ? Number(params.get("steps")) : Infinity;
  const maxSteps = site.max_episode_steps;
  let seed = Number(params.get("seed") ?? $("seed").value);
  $("seed").value = String(seed);
  let obs, running = true, busy = 0, busySteps = 0;

  const resetEpisode = () => {
    obs = env.reset(seededRandom(seed));
    policy.reset();
    status.return = 0;
    status.episodeSteps = 0;
  };
  const show = () => {
    $("return").textContent = status.return.toFixed(1);
    $("step").textContent = `${status.episodeSteps} / ${maxSteps}`;
    $("sps").textContent = status.stepsPerSecond ? status.stepsPerSecond.toFixed(0) : "-";
    $("episodes").textContent = status.returns.length
      ? status.returns.slice(-5).map((r) => `seed ${r.seed}: ${r.return.toFixed(1)} (${r.length} steps)`).join(" · ")
      : "none yet";
    $("state").textContent = status.steps >= stopAt ? `stopped after ${status.steps} steps` : running ? "running" : "paused";
    $("play").textContent = running ? "Pause" : "Play";
  };

  // One env step: the policy's greedy action, MuJoCo's frame_skip steps, the reward; a new episode (the next seed)
  // once it terminates or reaches max_episode_steps.
  const step = async () => {
    const { action } = await policy.act(obs);
    const result = env.step(action);
    obs = result.obs;
    status.return += result.reward;
    status.episodeSteps += 1;
    status.steps += 1;
    if (!Number.isFinite(status.return)) throw new Error(`the return is ${status.return} at step ${status.steps}`);
    if (result.terminated || status.episodeSteps >= maxSteps) {
      status.returns.push({ seed, return: status.return, length: status.episodeSteps, terminated: result.terminated });
      status.episodes += 1;
      seed += 1;
      $("seed").value = String(seed);
      return true;
    }
    return false;
  };

  let simTime = 0, last = performance.now();
  const catchUp = Math.ceil(0.1 / env.dt) + 1;
  const frame = async (now) => {
    try {
      const elapsed = Math.min((now - last) / 1000, 0.1);
      last = now;
      if (running && status.steps < stopAt) {
        const t0 = performance.now();
        let n = 0;
        simTime += elapsed;
        // Real time: as many steps as the frame's wall time holds (up to 0.1 s of it, for slow frames); fast: steps
        // for about 25 ms.
        while (status.steps < stopAt && (fast ? performance.now() - t0 < 25 : simTime >= env.dt && n < catchUp)) {
          simTime -= env.dt;
          n += 1;
          if (await step()) { resetEpisode(); break; }
        }
        if (!fast && n === catchUp) simTime = 0; // the machine cannot keep up: do not pile up a backlog
        busy += performance.now() - t0;
        busySteps += n;
        if (busy > 500) { status.stepsPerSecond = (1000 * busySteps) / busy; busy = 0; busySteps = 0; }
      }
      draw(env.data, site.view);
      show();
      if (status.steps >= stopAt && busySteps) status.stepsPerSecond = (1000 * busySteps) / busy;
      requestAnimationFrame(frame);
    } catch (error) { fail(error); }
  };

  $("play").onclick = () => { running = !running; show(); };
  $("reset").onclick = () => { seed = Number($("seed").value) || 0; resetEpisode(); draw(env.data, site.view); show(); };
  resetEpisode();
  status.ready = true;
  requestAnimationFrame(frame);
}

main().catch(fail);
