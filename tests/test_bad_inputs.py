"""The adversarial corpus: every class of bad input is refused with one clear error.

Classes (issue "Every bad input refused"): 1 silent wrong actions from the normaliser, 2 NaN outputs, 3 sizes
without limits, 4 malformed input, 5 graph metadata that lies, 6 CLI tracebacks, 7 leftovers.
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from safetensors.numpy import load_file, save_file

import gptrl
from conftest import FIXTURES
from gptrl.bundle import BundleError, load_bundle
from gptrl.errors import NonFiniteOutputError
from gptrl.runtime import load_policy

LLAMA = FIXTURES / "llama-hopper-single" / "bundle"
V1 = FIXTURES / "llama-hopper-v1-single" / "bundle"


def _copy(tmp_path: Path, src: Path = LLAMA, name: str = "b") -> Path:
    return Path(shutil.copytree(src, tmp_path / name))


def _edit_config(folder: Path, edit) -> None:
    data = json.loads((folder / "config.json").read_text())
    edit(data)
    (folder / "config.json").write_text(json.dumps(data))


def _edit_weights(folder: Path, edit) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A bundle folder with its exported (sealed) policy.onnx."""
    folder = _copy(tmp_path_factory.mktemp("exported"))
    gptrl.export_onnx(folder)
    return folder


# -- 1. silent wrong actions: the normaliser is decided from config AND weights -----------------------------------


def test_config_saying_not_embedded_while_weights_switch_it_on_is_refused(tmp_path):
    folder = _copy(tmp_path)
    _edit_config(folder, lambda d: d.update(state_normalization={"embedded": False, "legacy_sidecar": False}))
    with pytest.raises(BundleError, match=r"'state_normalization.embedded' = false, but .*model.safetensors switches"):
        load_bundle(folder)


def test_v1_bundle_silent_about_normalisation_without_sidecar_is_refused(tmp_path):
    folder = _copy(tmp_path, V1)
    _edit_config(folder, lambda d: d.pop("state_normalization"))
    _edit_weights(folder, lambda t: [t.pop(k) for k in list(t) if k.startswith("state_normalization")])
    assert load_bundle(folder).normalizer_source == "sidecar"  # the sidecar is found without the config naming it
    (folder / "state_normalizer.safetensors").unlink()
    with pytest.raises(BundleError, match="no state normaliser found"):
        load_bundle(folder)


def test_explicitly_unnormalised_bundle_still_loads(tmp_path):
    folder = _copy(tmp_path)
    _edit_config(folder, lambda d: d.update(state_normalization={"embedded": False, "legacy_sidecar": False}))
    _edit_weights(folder, lambda t: t.update(state_normalization_enabled=np.zeros(1, np.float32)))
    bundle = load_bundle(folder)
    assert bundle.normalizer_source == "none" and not bundle.normalizer.enabled


# -- 2. never a NaN action ------------------------------------------------------------------------------------------


def test_action_bounds_with_an_empty_range_are_refused(tmp_path):
    folder = _copy(tmp_path)
    _edit_config(folder, lambda d: (d["action_specs"][0].update(low=[-1, 0.5, -1], high=[1, 0.5, 1]),
                                    d.pop("action_container")))
    with pytest.raises(BundleError, match=r"'action_specs\[0\]' needs low < high"):
        load_bundle(folder)


def test_graph_with_a_nan_initializer_is_refused_at_load(tmp_path, exported):
    model = onnx.load(exported / "policy.onnx")
    init = next(i for i in model.graph.initializer if i.name.endswith("qkv_proj.weight"))
    array = numpy_helper.to_array(init).copy()
    array[0, 0] = np.nan
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    onnx.save(model, tmp_path / "tampered.onnx")
    with pytest.raises(BundleError, match=r"tampered.onnx: its bytes do not match the seal"):
        load_policy(tmp_path / "tampered.onnx")


def test_huge_finite_observation_is_refused(exported):
    policy = load_policy(exported)
    obs = np.zeros(11, np.float32)
    policy.reset(obs)
    policy.act(obs)
    with pytest.raises(ValueError, match=r"observation holds values beyond \+-1e\+12 in rows \[0\]"):
        policy.act(np.full(11, 3e38, np.float32))


@pytest.fixture(scope="module")
def fragile(tmp_path_factory) -> Path:
    """A valid bundle whose normaliser std is tiny: ordinary-looking inputs overflow float32 inside the network."""
    folder = _copy(tmp_path_factory.mktemp("fragile"))
    _edit_weights(folder, lambda t: t.update(state_normalization_mean=np.zeros(11, np.float32),
                                             state_normalization_std=np.full(11, 1e-30, np.float32)))
    gptrl.export_onnx(folder)
    return folder


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_a_non_finite_output_raises_naming_row_and_step(fragile, backend):
    """An output that overflows is an error naming the row and step, never an action."""
    runner = load_policy(fragile, num_envs=2) if backend == "onnx" else gptrl.load_runner(fragile, num_envs=2)
    obs = np.zeros((2, 11), np.float32)
    runner.reset(obs)
    runner.act(obs)
    obs[1] = 1e9  # within the input limit, but (1e9 - 0) / 1e-30 overflows float32
    with pytest.raises(NonFiniteOutputError, match=r"row 1 at step 2"):  # s_1 enters the token of act 2
        for _ in range(3):
            runner.act(obs)


# -- 3. sizes have limits, checked before anything is allocated -----------------------------------------------------


@pytest.mark.parametrize("key, value, message", [
    ("context_length", 10**9, "'model_config.context_length' = 1000000000 exceeds gptrl's limit"),
    ("num_layers", 10**9, "'model_config.num_layers' = 1000000000 exceeds gptrl's limit"),
    ("num_layers", 10**6, "'model_config.num_layers' = 1000000 exceeds gptrl's limit"),
    ("d_model", 2**20, "'model_config.d_model' = 1048576 exceeds gptrl's limit"),
    ("intermediate_size", 131_072, "describes"),  # within each limit, but too many parameters together
])
def test_config_sizes_past_the_limits_are_refused_quickly(tmp_path, key, value, message):
    folder = _copy(tmp_path)

    def edit(d):
        d["model_config"][key] = value
        if key == "context_length":
            d["context_length"] = value
        if key == "intermediate_size":
            d["model_config"].update(d_model=16_384, num_heads=16, num_layers=256)

    _edit_config(folder, edit)
    start = time.perf_counter()
    with pytest.raises(BundleError, match=message):
        load_bundle(folder)
    assert time.perf_counter() - start < 5  # refused from the config alone: nothing listed or allocated


@pytest.mark.parametrize("kwargs, message", [
    ({"kv_cache_max_len": 10**12}, "kv_cache_max_len=1000000000000 exceeds gptrl's limit"),
    ({"num_envs": 10**7}, "num_envs=10000000 exceeds gptrl's limit"),
    ({"num_envs": 60_000, "kv_cache_max_len": 60_000}, "key/value cache"),
    ({"kv_cache_max_len": 0}, "kv_cache_max_len must be a positive integer"),
])
@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_serving_sizes_past_the_limits_are_value_errors(exported, kwargs, message, backend):
    load = load_policy if backend == "onnx" else gptrl.load_runner
    with pytest.raises(ValueError, match=message):
        load(exported, **kwargs)


# -- 4. malformed input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["state_specs"][0].update(low=[float("nan")] * 11), r"'state_specs\[0\].low': bound is NaN"),
    (lambda d: d["action_specs"][0].update(high=[1, float("nan"), 1]), r"'action_specs\[0\].high': bound is NaN"),
    (lambda d: d["state_container"].update(low=["nan"] * 11), "'state_container' is not a valid space: bound 'nan'"),
    (lambda d: d["action_container"].update(shape=[4], low=[-1] * 4, high=[1] * 4),
     "'action_container' describes 4 features but the specs total 3"),
    (lambda d: d["action_container"].update(high=[2, 2, 2]), "'action_container.high' disagrees with 'action_specs'"),
    (lambda d: d["state_container"].update(low="-inf", high="+infinity"), None),  # scalar bounds are valid
])
def test_malformed_specs_and_containers(tmp_path, edit, message):
    from gptrl.bundle import parse_config
    from gptrl.cli import inspect_bundle

    folder = _copy(tmp_path)
    data = json.loads((folder / "config.json").read_text())
    edit(data)
    if message is None:
        (folder / "config.json").write_text(json.dumps(data))
        assert inspect_bundle(str(folder))["observation_space"] == "Box(11,) float64 unbounded"
        return
    with pytest.raises(BundleError, match=message):
        parse_config(data, str(folder / "config.json"))  # a Python caller's dict (NaN included) is checked alike


def test_nan_literals_in_config_json_are_refused(tmp_path):
    folder = _copy(tmp_path)
    (folder / "config.json").write_text((folder / "config.json").read_text().replace('"low": [', '"low": [NaN, ', 1))
    with pytest.raises(BundleError, match="config.json: not valid JSON .*NaN is not valid JSON"):
        load_bundle(folder)


def test_safetensors_header_naming_a_tensor_twice_is_refused(tmp_path):
    folder = _copy(tmp_path)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    name = "input_proj.layers.0.bias"
    text = json.dumps(header)[:-1] + f', "{name}": ' + json.dumps(header[name]) + "}"
    raw = text.encode().ljust(n + 8 * ((len(text) - n) // 8 + 1), b" ")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    with pytest.raises(BundleError, match=r"header names tensor\(s\) \['input_proj.layers.0.bias'\] more than once"):
        load_bundle(folder)


def test_deeply_nested_json_is_refused(tmp_path):
    folder = _copy(tmp_path)
    _edit_config(folder, lambda d: None)
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(BundleError, match="nested deeper than 64 levels"):
        load_bundle(folder)


# -- 5. graph metadata is checked against the graph -----------------------------------------------------------------


def _sealed_graph_with_metadata_of(bundle_dir: Path, other: Path, variant: str, out: Path) -> Path:
    from gptrl.bundle.policy_graph import metadata_props
    from gptrl.graph import build_step_graph, serialize

    model = build_step_graph(load_bundle(bundle_dir), variant)
    onnx.helper.set_model_props(model, metadata_props(load_bundle(other).config, variant, "", "test"))
    out.write_bytes(serialize(model))
    return out


def test_graph_whose_inputs_disagree_with_its_metadata_is_refused(tmp_path):
    halfcheetah = FIXTURES / "llama-halfcheetah-batch3" / "bundle"
    path = _sealed_graph_with_metadata_of(halfcheetah, LLAMA, "attention", tmp_path / "lying.onnx")
    with pytest.raises(BundleError, match=r"lying.onnx: input 'state' is tensor\(float\) \['batch', 17\], but the metadata"):
        load_policy(path)


def test_graph_whose_variant_disagrees_with_its_metadata_is_refused(tmp_path):
    from gptrl.bundle.policy_graph import KEY_VARIANT

    path = _sealed_graph_with_metadata_of(LLAMA, LLAMA, "attention", tmp_path / "variant.onnx")
    model = onnx.load(path)
    for prop in model.metadata_props:
        if prop.key == KEY_VARIANT:
            prop.value = "portable"
    from gptrl.graph import serialize

    for prop in model.metadata_props:  # re-seal so only the variant lies
        if prop.key == "gptrl.graph_sha256":
            from gptrl.bundle.policy_graph import SEAL_PLACEHOLDER

            prop.value = SEAL_PLACEHOLDER
    path.write_bytes(serialize(model))
    with pytest.raises(BundleError, match=r"variant.onnx: the graph's inputs disagree with its metadata"):
        load_policy(path)


# -- 6. every CLI error is one line, no traceback -----------------------------------------------------------------


def _gptrl(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "gptrl.cli", *args], capture_output=True, text=True, **kwargs)


@pytest.mark.parametrize("args, message", [
    (["eval", "{bundle}", "--num-envs", "0"], "--num-envs: must be at least 1, got 0"),
    (["eval", "{bundle}", "--episodes", "0"], "--episodes: must be at least 1, got 0"),
    (["eval", "{bundle}", "--env", "NoSuchEnv-v9"], "unknown gymnasium env 'NoSuchEnv-v9'"),
    (["export", "{bundle}", "-o", "{tmp}"], "is a folder; give the .onnx file to write"),
    (["inspect", "{tmp}/nothing"], "not a bundle folder"),
    (["eval", "{tmp}/nothing.onnx"], "no such file or bundle folder"),
])
def test_cli_errors_are_one_line_without_traceback(tmp_path, exported, args, message):
    result = _gptrl(*[a.format(bundle=exported, tmp=tmp_path) for a in args])
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    if "must be at least" not in message:  # argparse prints its usage line first; ours is one line
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_debug_shows_the_traceback(tmp_path):
    result = _gptrl("--debug", "inspect", str(tmp_path / "nothing"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_cli_refuses_a_malicious_pickle_in_one_line(tmp_path):
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    folder = tmp_path / "legacy"
    folder.mkdir()
    shutil.copy(LLAMA / "config.json", folder / "config.json")
    torch.save({"x": Payload()}, folder / "model.pt")
    result = _gptrl("convert-legacy", str(folder))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "refused: the pickle holds objects other than tensors" in result.stderr
    assert "weights_only" not in result.stderr and not (tmp_path / "pwned").exists()


# -- 7. leftovers ---------------------------------------------------------------------------------------------------


def test_sigterm_during_export_leaves_no_temporary_and_keeps_the_old_file(tmp_path):
    folder = _copy(tmp_path)
    gptrl.export_onnx(folder, verify=False)
    before = (folder / "policy.onnx").read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "gptrl.cli", "export", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(folder.glob(".policy.onnx.tmp-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the export finished before the temporary file was seen"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "policy.onnx"]
    assert (folder / "policy.onnx").read_bytes() == before


def test_temporaries_of_dead_processes_are_swept(tmp_path):
    folder = _copy(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder / f".policy.onnx.tmp-{int(dead.stdout)}-deadbeef.onnx"
    stale.write_bytes(b"half an export")
    gptrl.export_onnx(folder, verify=False)
    assert not stale.exists()


def test_errors_name_the_users_path_not_a_temporary(tmp_path, monkeypatch):
    folder = _copy(tmp_path)
    from gptrl.exporter import onnx_export

    real = onnx_export.verify_export
    monkeypatch.setattr(onnx_export, "verify_export", lambda *a, **k: real(*a, **{**k, "tolerance": -1.0}))
    with pytest.raises(onnx_export.ExportVerificationError) as exc:
        gptrl.export_onnx(folder)
    assert str(folder / "policy.onnx") in str(exc.value) and ".tmp-" not in str(exc.value)
    assert not (folder / "policy.onnx").exists()
