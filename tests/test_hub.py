"""Hub loading through the real huggingface_hub code path, offline, from a cache the test builds."""

import shutil

import huggingface_hub
import pytest

import gptrl
from conftest import FIXTURES, load_trace, replay
from gptrl.bundle import BundleError

REPO = "gptrl-test/policies"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path):
    """A huggingface_hub cache holding one repo with three bundles in subfolders."""
    repo = tmp_path / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for name in ("llama-hopper-single", "llama-hopper-v1-single", "gpt2-hopper-single"):
        shutil.copytree(FIXTURES / name / "bundle", snapshot / name)
    (snapshot / "README.md").write_text("policies")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return tmp_path


@pytest.fixture
def downloads(monkeypatch):
    """Record every file gptrl asks huggingface_hub for (the real function still runs)."""
    calls = []
    real = huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kwargs):
        calls.append((kwargs.get("subfolder"), filename))
        return real(repo_id, filename, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    return calls


@pytest.mark.parametrize("name", ["llama-hopper-single", "llama-hopper-v1-single"])
def test_load_runner_from_hub_offline(hub_cache, downloads, name):
    runner = gptrl.load_runner_from_hub(REPO, subfolder=name, cache_dir=hub_cache, local_files_only=True)
    action_err, _ = replay(load_trace(name), runner)
    assert action_err < 1e-4
    expected = {(name, "config.json"), (name, "model.safetensors")}
    if name.endswith("v1-single"):
        expected.add((name, "state_normalizer.safetensors"))
    assert set(downloads) == expected  # only this bundle's files, never the rest of the repo


def test_hub_revision_and_missing_files(hub_cache):
    runner = gptrl.load_runner_from_hub(REPO, subfolder="gpt2-hopper-single", revision=COMMIT, cache_dir=hub_cache, local_files_only=True)
    assert runner.config.model.network == "gpt2"
    with pytest.raises(BundleError, match="hub:gptrl-test/policies/nope/config.json: could not be fetched"):
        gptrl.load_runner_from_hub(REPO, subfolder="nope", cache_dir=hub_cache, local_files_only=True)
    with pytest.raises(BundleError, match="could not be fetched"):
        gptrl.load_runner_from_hub("someone/else", cache_dir=hub_cache, local_files_only=True)


def test_v1_bundle_silent_about_normalisation_gets_its_sidecar_from_the_hub(hub_cache, downloads):
    """The sidecar rule is the local one: a v1 config without a 'state_normalization' key still brings its
    state_normalizer.safetensors, and the policy runs normalised (the reference trace replays)."""
    import json

    from safetensors.numpy import load_file, save_file

    folder = hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT / "llama-hopper-v1-single"
    config = json.loads((folder / "config.json").read_text())
    config.pop("state_normalization")
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("state_normalization")},
              str(folder / "model.safetensors"))  # the sidecar is now the only normaliser
    runner = gptrl.load_runner_from_hub(REPO, subfolder="llama-hopper-v1-single", cache_dir=hub_cache,
                                        local_files_only=True)
    assert ("llama-hopper-v1-single", "state_normalizer.safetensors") in downloads
    action_err, _ = replay(load_trace("llama-hopper-v1-single"), runner)
    assert action_err < 1e-4
