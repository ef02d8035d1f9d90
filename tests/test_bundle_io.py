"""Reading and validating bundles: config.json variants and every kind of bad bundle."""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import FIXTURES
from gptrl.bundle import BundleError, load_bundle, parse_config, read_config
from gptrl.bundle.spaces import space_from_dict, space_to_dict

LLAMA = FIXTURES / "llama-hopper-single" / "bundle"
GPT2 = FIXTURES / "gpt2-hopper-single" / "bundle"
V1 = FIXTURES / "llama-hopper-v1-single" / "bundle"


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(LLAMA, dst)
    return dst


def _edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_weights(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def test_reads_v2_and_v1_bundles():
    llama, gpt2, v1 = load_bundle(LLAMA), load_bundle(GPT2), load_bundle(V1)
    assert (llama.config.format_version, v1.config.format_version) == (2, 1)
    assert llama.config.model.network == "llama" and gpt2.config.model.network == "gpt2"
    assert (llama.config.state_dim, llama.config.action_dim, llama.config.context_length) == (11, 3, 8)
    assert v1.config.normalization_sidecar and not llama.config.normalization_sidecar
    # The v1 sidecar gives std = sqrt(var) + 1e-8: the same normaliser as the embedded buffers.
    np.testing.assert_allclose(v1.normalizer.std, llama.normalizer.std, rtol=1e-6)
    np.testing.assert_array_equal(v1.normalizer.mean, llama.normalizer.mean)


def test_spaces_are_rebuilt_and_round_trip():
    config = read_config(LLAMA)
    obs, act = config.observation_space, config.action_space
    assert obs.shape == (11,) and obs.dtype == np.float64 and np.all(np.isinf(obs.low))
    assert act.shape == (3,) and np.all(act.low == -1) and np.all(act.high == 1)
    assert space_to_dict(obs) == config.state_container
    from gymnasium import spaces

    nested = spaces.Dict({"a": spaces.Discrete(4, start=1), "b": spaces.Tuple([spaces.MultiBinary(3), spaces.MultiDiscrete([2, 5])])})
    assert space_from_dict(json.loads(json.dumps(space_to_dict(nested)))) == nested


def test_older_spellings_and_missing_keys_take_defaults():
    data = json.loads((LLAMA / "config.json").read_text())
    model = data["model_config"]
    model["train_context_length"] = model.pop("context_length")
    for key in ("rope_theta", "intermediate_size", "max_position_embeddings", "num_layers"):
        model.pop(key)
    data.pop("context_length")
    data.pop("bundle_format_version")
    config = parse_config(data)
    m = config.model
    assert (m.context_length, m.rope_theta, m.intermediate_size, m.max_position_embeddings, m.num_layers) == (8, 1000.0, 4 * 32, 64, 4)
    assert config.format_version == 1

    for name in ("gpt", "GPT-2", "gpt2"):
        data["model_config"] = {"network_name": name, "context_length": 8}
        m = parse_config(data).model
        assert (m.network, m.max_position_embeddings, m.d_model, m.num_heads) == ("gpt2", 16, 256, 8)

    data["model_config"] = {}
    m = parse_config(data).model
    assert (m.network, m.num_layers, m.d_model, m.num_heads, m.context_length, m.max_position_embeddings) == ("llama", 4, 256, 8, 32, 256)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["model_config"].update(num_layers="2"), "'model_config.num_layers' must be an integer, got str '2'"),
        (lambda d: d["model_config"].update(use_eos=1), "'model_config.use_eos' must be true or false"),
        (lambda d: d["model_config"].update(network_name="mamba"), "'model_config.network_name' must be Llama or GPT2"),
        (lambda d: d.update(bundle_format_version=3), "'bundle_format_version' = 3 is not supported"),
        (lambda d: d.update(requires_capabilities=["return_conditioning"]), "['return_conditioning']"),
        (lambda d: d.update(state_specs="11"), "'state_specs' must be a list"),
        (lambda d: d["action_specs"][0].update(low=[-1, -1]), "'action_specs[0].low' has 2 entries, expected size 3"),
        (lambda d: d["action_specs"][0].update(squash=None), "'action_specs[0]' needs finite low/high and squash 'tanh'"),
        (lambda d: d.update(state_container={"type": "Box", "shape": "11"}), "'state_container' is not a valid space"),
        (lambda d: d.update(serving={"bos_cache_mode": "keep"}), "'serving.bos_cache_mode' must be one of"),
        (lambda d: d.update(context_length=16), "disagrees with the top-level 'context_length'"),
        (lambda d: d["model_config"].update(num_heads=5), "must be divisible by num_heads"),
    ],
)
def test_bad_config_raises_naming_file_and_key(bundle_copy, edit, message):
    _edit_config(bundle_copy, edit)
    with pytest.raises(BundleError) as exc:
        load_bundle(bundle_copy)
    assert str(bundle_copy / "config.json") in str(exc.value)
    assert message in str(exc.value)


def test_config_that_is_not_json(bundle_copy):
    (bundle_copy / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="config.json: not valid JSON"):
        load_bundle(bundle_copy)


def test_missing_files(tmp_path, bundle_copy):
    with pytest.raises(BundleError, match="not a bundle folder"):
        load_bundle(tmp_path / "nowhere")
    (bundle_copy / "model.safetensors").unlink()
    with pytest.raises(BundleError, match=r"model\.safetensors: missing"):
        load_bundle(bundle_copy)
    (bundle_copy / "config.json").unlink()
    with pytest.raises(BundleError, match=r"config\.json: missing"):
        load_bundle(bundle_copy)


def test_truncated_and_corrupt_safetensors(bundle_copy):
    path = bundle_copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="model.safetensors: not a readable safetensors file"):
        load_bundle(bundle_copy)
    n = struct.unpack("<Q", data[:8])[0]
    path.write_bytes(data[:8] + b"#" * n + data[8 + n :])  # garbage header
    with pytest.raises(BundleError, match="not a readable safetensors file"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("backbone.net.layers.1.mlp.up_proj.weight"), "missing tensor 'backbone.net.layers.1.mlp.up_proj.weight' (expected shape [128, 32])"),
        (lambda t: t.update({"input_proj.layers.0.weight": np.zeros((32, 14), np.float32)}), "tensor 'input_proj.layers.0.weight' has shape [32, 14], expected [32, 15]"),
        (lambda t: t["output_head.0.layers.1.weight"].__setitem__((0, 0), np.nan), "tensor 'output_head.0.layers.1.weight' holds non-finite values"),
        (lambda t: t.update({"backbone.net.norm.weight": t["backbone.net.norm.weight"].astype(np.float64)}), "tensor 'backbone.net.norm.weight' has dtype float64, expected float32"),
        (lambda t: t.update({"backbone.net.layers.2.mlp.up_proj.weight": np.zeros((128, 32), np.float32)}), "unexpected tensors ['backbone.net.layers.2.mlp.up_proj.weight']"),
        (lambda t: t.pop("state_normalization_std"), "missing tensor 'state_normalization_std'"),
        (lambda t: t.update({"state_normalization_std": np.zeros(11, np.float32)}), "'state_normalization_std' must be positive"),
        (lambda t: t.update({"action_normalization_enabled": np.ones(1, np.float32)}), "'action_normalization_enabled' = 1 is not supported"),
    ],
)
def test_bad_weights_raise_naming_file_and_tensor(bundle_copy, edit, message):
    _edit_weights(bundle_copy, edit)
    with pytest.raises(BundleError) as exc:
        load_bundle(bundle_copy)
    assert str(bundle_copy / "model.safetensors") in str(exc.value)
    assert message in str(exc.value)


def test_unexpected_tensors_only_warn_when_not_strict(bundle_copy):
    _edit_weights(bundle_copy, lambda t: t.update({"extra.buffer": np.zeros(2, np.float32)}))
    with pytest.warns(UserWarning, match="extra.buffer"):
        bundle = load_bundle(bundle_copy, strict=False)
    assert "extra.buffer" not in bundle.model_tensors()


def test_v1_sidecar_problems(tmp_path):
    folder = tmp_path / "v1"
    shutil.copytree(V1, folder)
    save_file({"mean": np.zeros(11, np.float32), "var": -np.ones(11, np.float32)}, str(folder / "state_normalizer.safetensors"))
    with pytest.raises(BundleError, match="state_normalizer.safetensors: tensor 'var' holds negative values"):
        load_bundle(folder)
    save_file({"mean": np.zeros(11, np.float32), "var": np.ones(11, np.float32)}, str(folder / "state_normalizer.safetensors"))
    with pytest.raises(BundleError, match="sidecar normaliser disagrees"):
        load_bundle(folder)
    (folder / "state_normalizer.safetensors").unlink()
    with pytest.raises(BundleError, match="state_normalizer.safetensors: missing"):
        load_bundle(folder)
