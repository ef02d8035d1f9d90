PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Every install goes through the constraints file so torch stays the pinned CPU build.
PIP_INSTALL := $(PIP) install --constraint constraints.txt

.PHONY: install test demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

# Everything needed for development: the runtime, the exporter, MuJoCo, the hub client and the test tools.
$(VENV)/.dev-installed: $(PY) pyproject.toml constraints.txt
	$(PIP_INSTALL) -e ".[dev]"
	touch $@

install: $(VENV)/.dev-installed

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info gptrl.egg-info .pytest_cache
