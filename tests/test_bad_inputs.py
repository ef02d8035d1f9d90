"""The adversarial corpus: every class of bad input is refused with one clear error.

Classes (issue "Every bad input refused"): 1 silent wrong actions from the normaliser, 2 NaN outputs, 3 sizes
without limits, 4 malformed input, 5 graph metadata that lies, 6 CLI tracebacks, 7 leftovers. Part two (stateful
graphs, Decision Transformer bundles and imports, --quantize, gptrl record): 8 commands that would destroy what they
read, 9 silent loads of a wrong thing, 10 errors that name nothing, 11 gptrl record in one clean line.
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
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
def test_config_sizes_past_the_limits_are_refused_quickly(tmp_path, monkeypatch, key, value, message):
    from gptrl.bundle import bundle as bundle_module

    folder = _copy(tmp_path)

    def edit(d):
        d["model_config"][key] = value
        if key == "context_length":
            d["context_length"] = value
        if key == "intermediate_size":
            d["model_config"].update(d_model=16_384, num_heads=16, num_layers=256)

    _edit_config(folder, edit)

    def never(path):
        raise AssertionError(f"{path} was read: the limit was not checked from the config alone")

    monkeypatch.setattr(bundle_module, "read_safetensors", never)  # refused from the config: no weights read
    with pytest.raises(BundleError, match=message):
        load_bundle(folder)


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
    """The child stops inside the export (the temporary written, verification under way) and says so; only then is
    SIGTERM sent, so the signal always lands mid-write, whatever the machine's speed."""
    folder = _copy(tmp_path)
    gptrl.export_onnx(folder, verify=False)
    before = (folder / "policy.onnx").read_bytes()
    child = ("import sys\n"
             "from gptrl.exporter import onnx_export\n"
             "def wait(*args, **kwargs):\n"
             "    print('writing', flush=True)\n"
             "    sys.stdin.read()  # until the parent's signal\n"
             "onnx_export.verify_export = wait\n"
             "from gptrl.cli import main\n"
             f"sys.exit(main(['export', {str(folder)!r}]))\n")
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n", proc.communicate()
    assert len(list(folder.glob(".policy.onnx.tmp-*"))) == 1  # mid-write: the temporary exists
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "policy.onnx"]
    assert (folder / "policy.onnx").read_bytes() == before


def test_temporaries_of_dead_processes_are_swept(tmp_path):
    """A PID above the kernel's pid_max can never run (no reuse race); the parent's PID runs, so its temporary
    stays."""
    folder = _copy(tmp_path)
    pid_max = Path("/proc/sys/kernel/pid_max")
    dead = int(pid_max.read_text()) + 1 if pid_max.is_file() else 2**22 + 1
    stale = folder / f".policy.onnx.tmp-{dead}-deadbeef.onnx"
    stale.write_bytes(b"half an export")
    alive = folder / f".policy.onnx.tmp-{os.getppid()}-cafebabe.onnx"
    alive.write_bytes(b"another process's export under way")
    gptrl.export_onnx(folder, verify=False)
    assert not stale.exists() and alive.exists()


def test_errors_name_the_users_path_not_a_temporary(tmp_path, monkeypatch):
    folder = _copy(tmp_path)
    from gptrl.exporter import onnx_export

    real = onnx_export.verify_export
    monkeypatch.setattr(onnx_export, "verify_export", lambda *a, **k: real(*a, **{**k, "tolerance": -1.0}))
    with pytest.raises(onnx_export.ExportVerificationError) as exc:
        gptrl.export_onnx(folder)
    assert str(folder / "policy.onnx") in str(exc.value) and ".tmp-" not in str(exc.value)
    assert not (folder / "policy.onnx").exists()


# -- part two: a small Decision Transformer bundle (no transformers needed) ----------------------------------------

DT_CONFIG = {"model_type": "decision_transformer", "state_dim": 11, "act_dim": 3, "hidden_size": 16, "n_layer": 1,
             "n_head": 2, "max_ep_len": 100, "n_positions": 64, "action_tanh": True, "scale_attn_weights": True}
MEAN, STD = ",".join(["0"] * 11), ",".join(["1"] * 11)


def _dt_bundle(folder: Path, context_length: int = 4) -> Path:
    from gptrl.bundle.dt import DTSidecar, parse_dt_config, required_dt_tensors

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    shapes = required_dt_tensors(parse_dt_config(DT_CONFIG, "config.json"))
    save_file({k: (0.3 * rng.standard_normal(shape)).astype(np.float32) for k, shape in shapes.items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(DT_CONFIG))
    (folder / "gptrl_dt.json").write_text(DTSidecar([0.0] * 11, [1.0] * 11, 100.0, 50.0, "Hopper-v5",
                                                    context_length).to_json())
    return folder


@pytest.fixture(scope="module")
def dt_exported(tmp_path_factory) -> Path:
    """A DT bundle with its window graph (policy.onnx) and its stateful graph (stateful.onnx), both verified."""
    folder = _dt_bundle(tmp_path_factory.mktemp("dt") / "dt")
    gptrl.export_onnx(folder)
    gptrl.export_onnx(folder, folder / "stateful.onnx", variant="stateful")
    return folder


def _dt_runner(kind: str, folder: Path, num_envs: int):
    """The three Decision Transformer runners: torch, the window graph, the stateful graph."""
    if kind == "torch":
        return gptrl.load_runner(folder, num_envs=num_envs)
    return load_policy(folder if kind == "window" else folder / "stateful.onnx", num_envs=num_envs)


def _resealed(src: Path, out: Path, edit) -> Path:
    """``src`` with ``edit(model, props)`` applied and sealed anew, so only the edit can be refused."""
    from gptrl.bundle.policy_graph import KEY_GRAPH_SHA256, SEAL_PLACEHOLDER
    from gptrl.graph import serialize

    model = onnx.load(src)
    props = {p.key: p.value for p in model.metadata_props}
    edit(model, props)
    onnx.helper.set_model_props(model, props | {KEY_GRAPH_SHA256: SEAL_PLACEHOLDER})
    out.write_bytes(serialize(model))
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _main(capsys, args: list[str]) -> tuple[int, list[str]]:
    """Run the CLI in this process; returns (exit status, stderr lines)."""
    from gptrl.cli import main

    code = main(args)
    return code, capsys.readouterr().err.strip().splitlines()


# -- 8. no command writes over what it reads -----------------------------------------------------------------------


def _legacy_beside(folder: Path) -> None:
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in load_file(str(folder / "model.safetensors")).items()},
               folder / "model.pt")


@pytest.mark.parametrize("args, message", [
    (["export", "{b}", "--quantize", "int8", "-o", "{b}/model.safetensors"],
     "{b}/model.safetensors: is {b}/model.safetensors, which this command reads"),
    (["export", "{dt}", "--stateful", "-o", "{dt}/gptrl_dt.json"], "{dt}/gptrl_dt.json: is {dt}/gptrl_dt.json"),
    (["export", "{dt}", "-o", "{dt}/model.safetensors"], "is {dt}/model.safetensors, which this command reads"),
    (["export", "{b}", "-o", "{alias}/config.json"], "is {b}/config.json, which this command reads"),
    (["dt-import", "{dt}", "{dt}", f"--state-mean={MEAN}", f"--state-std={STD}", "--overwrite"],
     "{dt}: holds {dt}/config.json, which this command reads"),
    (["dt-import", "{dt}", "{tmp}", f"--state-mean={MEAN}", f"--state-std={STD}", "--overwrite"],
     "{tmp}: holds {dt}/config.json"),
    (["dt-import", "{dt}", "{b}", f"--state-mean={MEAN}", f"--state-std={STD}"],
     "{b}: already exists (add --overwrite to replace it)"),
    (["convert-legacy", "{b}"], "{b}/model.safetensors: already exists (add --overwrite to replace it)"),
])
def test_no_command_writes_over_what_it_reads(tmp_path, dt_exported, capsys, args, message):
    """Each is refused in one line before any work (the quantize check would take minutes), nothing changes."""
    b, dt = _copy(tmp_path), Path(shutil.copytree(dt_exported, tmp_path / "dt"))
    _legacy_beside(b)
    (tmp_path / "alias").symlink_to(b)  # the same folder under another name
    names = {"b": b, "dt": dt, "tmp": tmp_path, "alias": tmp_path / "alias"}
    before = _snapshot(tmp_path)
    code, err = _main(capsys, [a.format(**names) for a in args])
    assert code == 2 and len(err) == 1, err
    assert message.format(**names) in err[0]
    assert _snapshot(tmp_path) == before


def test_the_output_rule_still_lets_a_command_write_beside_its_inputs(tmp_path, dt_exported):
    """The default outputs sit in the folder read (policy.onnx), and re-exporting over an earlier graph is fine."""
    dt = Path(shutil.copytree(dt_exported, tmp_path / "dt"))
    assert gptrl.export_onnx(dt, dt / "stateful.onnx", variant="stateful", verify=False) == dt / "stateful.onnx"
    out = gptrl.import_decision_transformer(dt, dt / "copy", state_mean=np.zeros(11), state_std=np.ones(11))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "gptrl_dt.json", "model.safetensors"]


# -- 9. nothing wrong loads silently ---------------------------------------------------------------------------------


def _drop_io(model, props):
    props.pop("gptrl.io")


def _add_io(model, props):
    props["gptrl.io"] = "stateful-v1"


def _fix_batch_to_1(name: str):
    def edit(model, props):
        next(i for i in model.graph.input if i.name == name).type.tensor_type.shape.dim[0].dim_value = 1
    return edit


@pytest.fixture(scope="module")
def causal_stateful(tmp_path_factory, exported) -> Path:
    return gptrl.export_onnx(exported, tmp_path_factory.mktemp("cs") / "stateful.onnx", variant="stateful",
                             verify=False)


@pytest.mark.parametrize("graph, edit, message", [
    ("causal_stateful", _drop_io, "metadata 'gptrl.io' = None, expected 'stateful-v1'"),
    ("dt_stateful", _drop_io, "metadata 'gptrl.io' = None, expected 'stateful-v1'"),
    ("dt_window", _add_io, "metadata 'gptrl.io' = 'stateful-v1', expected None"),
    ("causal_attention", _fix_batch_to_1("state"), r"input 'state' is tensor\(float\) \[1, 11\], but the metadata "
                                                   r"implies tensor\(float\) \['batch', 11\]"),
    ("causal_stateful", _fix_batch_to_1("obs"), r"input 'obs' is tensor\(float\) \[1, 11\]"),
    ("dt_window", _fix_batch_to_1("states"), r"input 'states' is tensor\(float\) \[1, 4, 11\]"),
    ("dt_stateful", _fix_batch_to_1("reward"), r"input 'reward' is tensor\(float\) \[1\]"),
])
def test_graphs_that_would_run_another_way_are_refused(tmp_path, request, exported, dt_exported, graph, edit,
                                                       message):
    src = {"causal_attention": exported / "policy.onnx", "dt_window": dt_exported / "policy.onnx",
           "dt_stateful": dt_exported / "stateful.onnx"}.get(graph) or request.getfixturevalue(graph)
    assert load_policy(src, num_envs=2) is not None  # the graph as exported loads
    with pytest.raises(BundleError, match=message):
        load_policy(_resealed(src, tmp_path / "edited.onnx", edit), num_envs=2)


def _set(file: str, key: str, value):
    def edit(folder: Path):
        data = json.loads((folder / file).read_text())
        data[key] = value
        (folder / file).write_text(json.dumps(data))
    return edit


def _int32(name: str):
    return lambda folder: _edit_weights(folder, lambda t: t.update({name: t[name].astype(np.int32)}))


def _int32_pickle(name: str):
    """The older checkpoint layout (pytorch_model.bin), one tensor int32: a torch pickle is not cast either."""
    def edit(folder: Path):
        import torch

        tensors = {k: torch.from_numpy(v) for k, v in load_file(str(folder / "model.safetensors")).items()}
        tensors[name] = tensors[name].to(torch.int32)
        torch.save(tensors, folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set("gptrl_dt.json", "format", "gptrl-decision-transformer/2"),
     r"gptrl_dt.json: key 'format' = 'gptrl-decision-transformer/2': this gptrl reads "
     r"'gptrl-decision-transformer/1' only"),
    (_set("config.json", "action_tanh", None), r"config.json: key 'action_tanh' must be true or false, got null"),
    (_set("config.json", "scale_attn_weights", None), "key 'scale_attn_weights' must be true or false, got null"),
    (_set("config.json", "add_cross_attention", None), "key 'add_cross_attention' must be true or false, got null"),
    (_int32("embed_return.bias"), r"model.safetensors: tensor 'embed_return.bias' has dtype int32, expected float32"),
    (_int32("encoder.h.0.attn.c_attn.weight"), "tensor 'encoder.h.0.attn.c_attn.weight' has dtype int32"),
    (_int32_pickle("embed_return.bias"), r"pytorch_model.bin: tensor 'embed_return.bias' has dtype int32"),
])
@pytest.mark.parametrize("entry", ["load_runner", "export_onnx"])
def test_dt_bundle_files_that_would_load_as_another_model_are_refused(tmp_path, dt_exported, edit, message, entry):
    folder = Path(shutil.copytree(dt_exported, tmp_path / "dt"))
    edit(folder)
    with pytest.raises(BundleError, match=message):
        getattr(gptrl, entry)(folder)


@pytest.mark.parametrize("file, key, value", [
    ("gptrl_dt.json", "target_return", 10.0),
    ("gptrl_dt.json", "state_std", [2.0] * 11),
    ("gptrl_dt.json", "scale", 7.0),
    ("config.json", "action_tanh", False),
])
def test_a_graph_ignoring_an_edited_bundle_file_is_refused(tmp_path, dt_exported, file, key, value):
    """load_policy(folder) reads the graph, the torch runner the files: a value in the files that the graph does
    not carry is refused, naming the file and the key (as stale weights are)."""
    folder = Path(shutil.copytree(dt_exported, tmp_path / "dt"))
    _set(file, key, value)(folder)
    gptrl.load_runner(folder)  # the edited files themselves are valid
    with pytest.raises(BundleError, match=rf"policy.onnx: was exported with other values than .*{file} now holds "
                                          rf"\(keys \['{key}'\]\)"):
        load_policy(folder)


def test_a_harmless_edit_of_the_bundle_files_still_loads(tmp_path, dt_exported):
    folder = Path(shutil.copytree(dt_exported, tmp_path / "dt"))
    for name in ("gptrl_dt.json", "config.json"):
        data = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps(data, indent=4) + "\n\n")  # same values, other bytes
    _set("config.json", "transformers_version", "9.9.9")(folder)  # a key neither runtime reads
    assert load_policy(folder).sidecar.target_return == 50.0


@pytest.mark.parametrize("kind", ["torch", "window", "stateful"])
@pytest.mark.parametrize("call, value, message", [
    ("reward", np.array([1.0]), r"reward has shape \(1,\), expected \(2,\), one per row"),
    ("reward", 1.0, r"reward has shape \(\), expected \(2,\), one per row"),
    ("reward", "1.5", "reward must be numeric, .* got str '1.5'"),
    ("reward", [0.0, "x"], "reward must be numeric, .* got list"),
    ("reward", [[1.0], [2.0, 3.0]], "reward must be numeric"),
    ("reward", [0.0, None], "reward must be numeric"),
    ("reward", True, "reward must be numeric"),
    ("target", "high", "target_return must be a number or one per row, got str 'high'"),
    ("target", ["1", "2"], "target_return must be a number or one per row, got list"),
    ("target", [1.0, None], "target_return must be a number or one per row"),
    ("target", np.array([1.0]), r"target_return has shape \(1,\), expected a number or \(2,\)"),
])
def test_dt_runners_refuse_bad_rewards_and_targets_alike(dt_exported, kind, call, value, message):
    """All three runners: the same ValueError naming the argument, never numpy's words or a spread (1,) array."""
    runner = _dt_runner(kind, dt_exported, 2)
    obs = np.zeros((2, 11), np.float32)
    if call == "target":
        with pytest.raises(ValueError, match=message):
            runner.reset(obs, target_return=value)
        return
    runner.reset(obs)
    runner.act(obs)  # the first act reads no reward
    with pytest.raises(ValueError, match=message):
        runner.act(obs, reward=value)


def test_one_env_takes_a_number_or_one_reward_and_the_three_runners_agree(dt_exported):
    """The judgement: one env's reward is a number or shape (1,), read the same by all three runners."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(12, 11)).astype(np.float32)
    rewards = rng.normal(size=12)
    actions = {}
    for kind in ("torch", "window", "stateful"):
        for form in (float, lambda r: np.array([r])):
            runner = _dt_runner(kind, dt_exported, 1)
            runner.reset(obs[0], target_return=30.0)
            actions[kind, form] = np.array([runner.act(o, reward=None if t == 0 else form(rewards[t - 1]))
                                            for t, o in enumerate(obs)])
    values = list(actions.values())
    assert all(np.abs(v - values[0]).max() < 1e-5 for v in values), {k[0]: np.abs(v - values[0]).max()
                                                                     for k, v in actions.items()}
    assert np.abs(values[0][-1] - values[0][0]).max() > 1e-3  # the rewards moved the actions


@pytest.mark.parametrize("command", ["eval", "record"])
def test_a_target_for_a_policy_that_takes_none_is_refused_by_every_command(tmp_path, exported, capsys, command):
    out = ["-o", str(tmp_path / "ep.mp4")] if command == "record" else ["--episodes", "1"]
    code, err = _main(capsys, [command, str(exported), "--target-return", "100", *out])
    assert code == 2 and len(err) == 1, err
    assert "OnnxPolicy is not return-conditioned: it takes no target_return" in err[0]
    assert not (tmp_path / "ep.mp4").exists()


# -- 10. errors name the file, key or value ------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"state_mean": MEAN}, "key 'state_mean' must be a list, got str '0,0,"),
    ({"state_mean": {"mean": 0.0}}, "key 'state_mean' must be a list, got dict"),
    ({"state_mean": [object()] * 11}, "key 'state_mean' must hold finite numbers, got object .* at index 0"),
    ({"state_mean": [[0.0]] * 10 + [[0.0, 1.0]]}, r"key 'state_mean' must hold finite numbers, got list \[0.0\]"),
    ({"state_std": ["1"] * 11}, "key 'state_std' must hold finite numbers, got str '1' at index 0"),
    ({"state_std": np.array(["1"] * 11)}, "key 'state_std' must hold finite numbers, got str '1' at index 0"),
    ({"state_std": [1.0] * 10 + [float("nan")]}, "key 'state_std' must hold finite numbers, got float nan at index 10"),
    ({"context_length": 1025}, "key 'context_length' = 1025 exceeds gptrl's limit of 1024"),
    ({"scale": "1000"}, "key 'scale' must be a number, got str '1000'"),
])
def test_dt_import_arguments_are_refused_naming_the_key(tmp_path, dt_exported, kwargs, message):
    args = {"state_mean": np.zeros(11), "state_std": np.ones(11), **kwargs}
    with pytest.raises(BundleError, match=r"<import_decision_transformer arguments>: " + message):
        gptrl.import_decision_transformer(dt_exported, tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    (["0"] * 11, "key 'state_mean' must hold finite numbers, got str '0' at index 0"),
    ([[0.0, 1.0]] + [0.0] * 10, "key 'state_mean' must hold finite numbers, got list"),
    ({"mean": [0.0] * 11}, "expected a list of numbers"),
])
def test_dt_import_refuses_a_bad_file_list_in_one_line(tmp_path, dt_exported, capsys, content, message):
    (tmp_path / "mean.json").write_text(json.dumps(content))
    try:
        code, err = _main(capsys, ["dt-import", str(dt_exported), str(tmp_path / "out"),
                                   f"--state-mean=@{tmp_path / 'mean.json'}", f"--state-std={STD}"])
    except SystemExit as exc:  # argparse refuses a value of the wrong type with its usage line
        code, err = exc.code, capsys.readouterr().err.strip().splitlines()[-1:]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert "Traceback" not in err[0] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, message", [
    (_set("gptrl_dt.json", "context_length", 65_536),  # within the old limit: (3K)^2 bytes of mask alone, 38.6 GB
     r"gptrl_dt.json: key 'context_length' = 65536 exceeds gptrl's limit of 1024"),
    (_set("gptrl_dt.json", "context_length", 1025), "key 'context_length' = 1025 exceeds gptrl's limit of 1024"),
    (lambda f: (_set("config.json", "max_ep_len", 1 << 20)(f), _set("config.json", "hidden_size", 4096)(f)),
     r"config.json: the config describes [\d,]+ parameters, past gptrl's limit of 2,147,483,648"),
])
@pytest.mark.parametrize("entry", ["load_runner", "export_onnx"])
def test_dt_sizes_a_machine_cannot_serve_are_refused_from_the_files(tmp_path, monkeypatch, edit, message, entry):
    from gptrl.exporter.dt import runner

    folder = _dt_bundle(tmp_path / "dt")
    edit(folder)
    monkeypatch.setattr(runner, "DecisionTransformer", lambda config: pytest.fail("a model was allocated"))
    with pytest.raises(BundleError, match=message):
        getattr(gptrl, entry)(folder)


@pytest.mark.parametrize("kind", ["torch", "window", "stateful"])
def test_dt_rows_past_the_attention_budget_are_refused_before_allocating(dt_exported, kind):
    """K = 1024 is served, but not to 300 rows: 300 x 2 heads x 3072^2 float32 scores are 21 GiB a step."""
    from dataclasses import replace

    from gptrl.exporter.dt.runner import DTRunner
    from gptrl.runtime.dt import DTPolicy, StatefulDTPolicy

    runner = _dt_runner(kind, dt_exported, 1)
    with pytest.raises(ValueError, match=r"num_envs=300 x 2 heads x \(3 x K=1024 tokens\)\^2 attention scores take "
                                         r"21.1 GiB a step, past gptrl's limit of 8 GiB"):
        if kind == "torch":
            bundle = runner.bundle
            DTRunner(runner.model, replace(bundle, sidecar=replace(bundle.sidecar, context_length=1024)),
                     num_envs=300)
        else:
            cls = DTPolicy if kind == "window" else StatefulDTPolicy
            cls(runner.session, runner.config, replace(runner.sidecar, context_length=1024), num_envs=300)


# -- 11. gptrl record: every error one clean line, before any progress bar -------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["-o", "{tmp}/file/ep.mp4"], "{tmp}/file/ep.mp4: cannot be written: {tmp}/file is a file, not a folder"),
    (["-o", "{tmp}/folder.mp4"], "{tmp}/folder.mp4: is a folder; give a file path"),
    (["-o", "{tmp}/ep.avi"], "{tmp}/ep.avi: the output must end in .mp4 or .gif"),
    (["-o", "{tmp}/ep.mp4", "--fps=-1"], "fps must be a number in (0, 1000.0], got -1.0"),
    (["-o", "{tmp}/ep.mp4", "--fps=0"], "fps must be a number in (0, 1000.0], got 0.0"),
    (["-o", "{tmp}/ep.mp4", "--fps=nan"], "fps must be a number in (0, 1000.0], got nan"),
    (["-o", "{tmp}/ep.mp4", "--fps=inf"], "fps must be a number in (0, 1000.0], got inf"),
    (["-o", "{tmp}/ep.gif", "--fps=1e9"], "fps must be a number in (0, 1000.0], got 1000000000.0"),
])
def test_record_errors_are_one_line_before_any_progress_bar(tmp_path, exported, capsys, args, message):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "folder.mp4").mkdir()
    before = _snapshot(tmp_path)
    code, err = _main(capsys, ["record", str(exported), "--max-steps", "3", *[a.format(tmp=tmp_path) for a in args]])
    assert code == 2 and err == [f"gptrl record: error: {message.format(tmp=tmp_path)}"], err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("name, magic", [("EP.MP4", b"ftyp"), ("Ep.Gif", b"GIF8")])
def test_record_reads_the_suffix_in_any_case(tmp_path, exported, name, magic):
    from gptrl.record import record_episode

    rec = record_episode(exported, tmp_path / name, max_steps=2, width=32, height=32, progress=False)
    data = rec.path.read_bytes()
    assert magic in data[:12], data[:12]

