PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Every install comes from a lock file in locks/ (exact versions, sha256-checked; `make lock` writes them): torch
# stays the 2.13.0 CPU build. gptrl itself goes in editable, without dependencies, built by the locked setuptools.
LOCKED_INSTALL := $(PIP) install --require-hashes --requirement
GPTRL_EDITABLE := $(PIP) install --no-deps --no-build-isolation --editable .

DEMO_BUNDLE ?= bundles/hopper-v5

.PHONY: install install-runtime lock test lint demo verify-cards export bench bench-edge soak teacher data train dagger card dt-train dt-card ppo ppo-card breakout-ablation breakout-anchors baseline bench-ppo bench-ray clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(LOCKED_INSTALL) locks/build.txt

# Everything needed for development: the runtime, the exporter, MuJoCo, the hub client and the test tools.
$(VENV)/.dev-installed: $(PY) pyproject.toml locks/dev.txt
	$(LOCKED_INSTALL) locks/dev.txt
	$(GPTRL_EDITABLE)
	touch $@

install: $(VENV)/.dev-installed

# The torch-free runtime and what an evaluation needs (MuJoCo envs, a progress bar): no torch.
$(VENV)/.runtime-installed: $(PY) pyproject.toml locks/runtime.txt
	$(LOCKED_INSTALL) locks/runtime.txt
	$(GPTRL_EDITABLE)
	touch $@

install-runtime: $(VENV)/.runtime-installed

# Re-resolve the lock files after a change to pyproject.toml's dependencies (existing pins are kept where they still
# fit; LOCK_ARGS=--upgrade moves every package to its newest allowed version). locks/cuda.txt is resolved for
# x86-64 Linux and CPython 3.11 from here too, though this machine cannot install it.
LOCK_ARGS :=

lock: install
	$(PY) locks/lock.py $(LOCK_ARGS)

# Torch-free evaluation of a shipped bundle on the ONNX runtime.
demo: $(VENV)/.runtime-installed
	$(VENV)/bin/gptrl eval $(DEMO_BUNDLE) --episodes 10 --seed 0

# Re-export every shipped bundle's policy.onnx (verified against the torch runner); folders without config.json
# are skipped, and the first failed export stops the loop.
export: install
	for b in bundles/*/; do \
	  if [ -f "$$b/config.json" ]; then $(VENV)/bin/gptrl export "$$b" || exit 1; fi; \
	done

bench: install
	$(PY) benchmarks/step_latency.py

# Batch-1 latency of every graph kind (torch, attention, stateful fp32/int8/int4, MatMul floor).
bench-edge: install
	$(PY) benchmarks/edge.py

# 1M closed-loop steps at batch 1 and 64 (d256, context 32): resident memory at the start and the end.
soak: install
	$(PY) benchmarks/soak.py

# The training pipeline, one stage per target, for one env of gptrl/training/recipes.py:
#   make teacher ENV=Hopper-v5   the recipe's SAC or TQC teacher (resumable, runs/teachers/ENV), then the actors in teachers/
#                                (Humanoid-v5: gptrl.training.vector_tqc, meant for a GPU; runs/teachers/ENV-vector)
#   make data ENV=Hopper-v5      Minari datasets from the committed actors (data/minari)
#   make train ENV=Hopper-v5     behaviour cloning (resumable, runs/train/ENV), best candidate to bundles/
#   make dagger ENV=Hopper-v5    DAgger rounds from the bundle (resumable, runs/dagger/ENV), best round to bundles/
#   make card ENV=Hopper-v5      the 50-episode ONNX evaluation and the bundle's model card
# `:=`, not `?=`: a shell variable that happens to be called ENV must not pick the env (make ENV=... still does).
ENV := Hopper-v5

teacher: install
	$(PY) -m gptrl.training.teacher $(ENV) --publish

data: install
	$(PY) -m gptrl.training.datasets $(ENV) --overwrite

train: install
	$(PY) -m gptrl.training.train $(ENV) --publish

dagger: install
	$(PY) -m gptrl.training.dagger $(ENV) --publish

# NUM_ENVS: envs stepped together in the card's 50-episode evaluation (same per-seed returns, faster).
NUM_ENVS := 1

card: install
	$(PY) -m gptrl.training.model_card $(ENV) --num-envs $(NUM_ENVS)

# Decision Transformers on the same datasets (make data first):
#   make dt-train ENV=Hopper-v5   train (resumable, runs/dt/ENV), best candidate to bundles/dt-ENV/ with policy.onnx
#   make dt-card ENV=Hopper-v5    50 seeds at the default target and at 6 targets across the data; the model card
dt-train: install
	$(PY) -m gptrl.training.dt_train $(ENV) --publish

dt-card: install
	$(PY) -m gptrl.training.dt_card $(ENV)

# PPO of the transformer policy acting through its KV cache (resumable, runs/ppo/ENV); the best held-out candidate
# to bundles/<env id lowercased>/ with policy.onnx, then its card:  make ppo ENV=CartPole-v1
ppo: install
	$(PY) -m gptrl.training.ppo $(ENV) --publish $(ARGS)
	$(PY) -m gptrl.training.ppo_card bundles/$(shell echo $(ENV) | sed 's|.*/||' | tr A-Z a-z) --run runs/ppo/$(ENV) --num-envs 10

# The card of a bundle `make ppo` published, measured again from its run:  make ppo-card ENV=CartPole-v1
ppo-card: install
	$(PY) -m gptrl.training.ppo_card bundles/$(shell echo $(ENV) | sed 's|.*/||' | tr A-Z a-z) --run runs/ppo/$(ENV) --num-envs 10

# ASCII Breakout's context-1 ablation (the bundle's preset, one step of cache; not published), then the anchors of
# its card (random, heuristic, planner, the ablation, the seed design's cost): docs/results/breakout-anchors.json
breakout-ablation: install
	$(PY) -m gptrl.training.ppo gptrl/AsciiBreakout-v0 --context-length 1 --out runs/ppo/gptrl/AsciiBreakout-v0-context1

breakout-anchors: install
	$(PY) -m gptrl.training.breakout_anchors

# The README's PPO tables and the masked-velocity plot from the cards, runs and baselines (docs/results/ppo-summary.json)
ppo-report: install
	$(PY) -m gptrl.training.ppo_report

# A same-budget SB3 baseline with the RL Zoo's tuned settings (runs/baselines/ALGO/ENV/seedS/result.json), then
# the summary docs/results/ppo-baselines.json:  make baseline ENV=CartPole-v1 ALGO=ppo SEED=0  (ALGO: ppo, recurrent-ppo)
ALGO := ppo
SEED := 0
baseline: install
	$(PY) -m gptrl.training.baselines $(ENV) --algo $(ALGO) --seed $(SEED)
	$(PY) -m gptrl.training.baselines --collect

# PPO steps/s end to end on CartPole-v1 (8 envs x 128): gptrl's transformer PPO against SB3 PPO, and where the time goes
bench-ppo: install
	$(PY) benchmarks/ppo_throughput.py

# Evaluation here against a local Ray instance with 1 and 2 workers, and Ray's start-up cost (docs/cluster.md).
# Ray binds to the machine's external interface, so it runs in a network namespace with only loopback (root).
bench-ray: install
	unshare -n -p -f --mount-proc --kill-child sh -c \
	  'ip link set lo up && mkdir -p /tmp/ray && mount -t tmpfs ray /tmp/ray && $(PY) benchmarks/ray_scaling.py'

# Re-run every model card's closed-loop measurements with the card's own commands (torch-free) and report per seed
# what differs, saying first whether this machine matches each card's provenance (exit 1 only for a regression:
# same provenance, other numbers). Per-step exactness on any CPU is tests/test_trajectories.py.
verify-cards: install-runtime
	$(PY) -m gptrl.training.verify_cards

# The Node.js driver of docs/stateful.md (onnxruntime-node from npm; .npmrc skips its optional CUDA download).
examples/node/node_modules: examples/node/package.json examples/node/package-lock.json
	cd examples/node && npm ci --no-audit --no-fund
	touch $@

# What `gptrl web` copies into a page (onnxruntime-web, MuJoCo's wasm build, three.js) and playwright-core for its
# browser test, pinned by web/package-lock.json.
web/node_modules: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

# Where npm is missing neither is installed and tests/test_docs_drivers.py and tests/test_web.py skip them, saying why.
NODE_DRIVER := $(if $(shell command -v npm),examples/node/node_modules web/node_modules)

test: install $(NODE_DRIVER)
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info gptrl.egg-info .pytest_cache
