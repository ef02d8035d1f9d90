"""Writing bundles (atomic) and converting legacy torch pickles (never executing them)."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import gptrl
from conftest import FIXTURES, load_trace, replay
from gptrl.bundle import BundleError, load_bundle, writer

LLAMA = FIXTURES / "llama-hopper-single"
V1 = FIXTURES / "llama-hopper-v1-single"


def test_export_bundle_round_trip_gives_the_same_actions(tmp_path):
    trace = load_trace("llama-hopper-single")
    runner = gptrl.load_runner(trace.bundle)
    out = gptrl.export_bundle(runner, tmp_path / "copy", env_id="Hopper-v5")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert os.listdir(tmp_path) == ["copy"]  # no temporary folder left behind
    config = json.loads((out / "config.json").read_text())
    assert config["bundle_format_version"] == 2 and config["package"] == "gptrl" and config["env_id"] == "Hopper-v5"
    # The bundle carries the same tensors the reference writes, with the same values.
    original, ours = load_bundle(trace.bundle).tensors, load_bundle(out).tensors
    assert sorted(original) == sorted(ours)
    for name in original:
        np.testing.assert_array_equal(original[name], ours[name], err_msg=name)
    action_err, _ = replay(trace, gptrl.load_runner(out))
    assert action_err < 1e-4


def test_v1_bundle_exports_as_v2_with_an_embedded_normaliser(tmp_path):
    out = gptrl.export_bundle(load_bundle(V1 / "bundle"), tmp_path / "v2")
    assert not (out / "state_normalizer.safetensors").exists()
    assert load_bundle(out).config.format_version == 2
    action_err, _ = replay(load_trace("llama-hopper-v1-single"), gptrl.load_runner(out))
    assert action_err < 1e-4


def test_existing_bundle_is_kept_unless_overwrite(tmp_path):
    runner = gptrl.load_runner(LLAMA / "bundle")
    target = gptrl.export_bundle(runner, tmp_path / "b")
    before = (target / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        gptrl.export_bundle(runner, target)
    with torch.no_grad():
        runner.model.output_head[0].layers[1].bias.add_(1.0)
    gptrl.export_bundle(runner, target, overwrite=True)
    assert (target / "model.safetensors").read_bytes() != before
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    runner = gptrl.load_runner(LLAMA / "bundle")
    target = gptrl.export_bundle(runner, tmp_path / "b")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        gptrl.export_bundle(runner, target, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        gptrl.export_bundle(runner, tmp_path / "new")
    assert sorted(os.listdir(tmp_path)) == ["b"]  # no temp folder, no half-written "new"
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_export_refuses_bad_weights(tmp_path):
    runner = gptrl.load_runner(LLAMA / "bundle")
    with torch.no_grad():
        runner.model.input_proj.layers[0].weight[0, 0] = float("nan")
    with pytest.raises(BundleError, match="input_proj.layers.0.weight' holds non-finite"):
        gptrl.export_bundle(runner, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def _legacy_bundle(tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    shutil.copy(V1 / "bundle" / "config.json", folder / "config.json")
    weights = load_bundle(V1 / "bundle").tensors
    torch.save({name: torch.from_numpy(a.copy()) for name, a in weights.items()}, folder / "model.pt")
    from safetensors.numpy import load_file

    sidecar = load_file(str(V1 / "bundle" / "state_normalizer.safetensors"))
    torch.save({name: torch.from_numpy(a) for name, a in sidecar.items()}, folder / "state_normalizer.pt")
    return folder


def test_convert_legacy_bundle(tmp_path):
    folder = _legacy_bundle(tmp_path)
    with pytest.raises(BundleError, match="legacy torch-pickle bundle, convert it first"):
        gptrl.load_runner(folder)
    gptrl.convert_legacy_bundle_to_safetensors(folder)
    assert sorted(os.listdir(folder)) == ["config.json", "model.pt", "model.safetensors", "state_normalizer.pt", "state_normalizer.safetensors"]
    action_err, _ = replay(load_trace("llama-hopper-v1-single"), gptrl.load_runner(folder))
    assert action_err < 1e-4
    with pytest.raises(FileExistsError):
        gptrl.convert_legacy_bundle_to_safetensors(folder)


class _Payload:
    """Unpickling this would run a command; weights_only loading must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_legacy_pickle_with_objects_is_refused_not_executed(tmp_path):
    folder = _legacy_bundle(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"input_proj.layers.0.weight": _Payload(marker)}, folder / "model.pt")
    with pytest.raises(BundleError, match="refused: the pickle holds objects other than tensors"):
        gptrl.convert_legacy_bundle_to_safetensors(folder)
    assert not marker.exists()
    assert not (folder / "model.safetensors").exists()


def test_legacy_conversion_of_wrong_weights_changes_nothing(tmp_path):
    folder = _legacy_bundle(tmp_path)
    torch.save({"input_proj.layers.0.weight": torch.zeros(3, 3)}, folder / "model.pt")
    with pytest.raises(BundleError, match="missing tensor"):
        gptrl.convert_legacy_bundle_to_safetensors(folder)
    assert sorted(os.listdir(folder)) == ["config.json", "model.pt", "state_normalizer.pt"]
