"""gptrl.import_decision_transformer / gptrl dt-import: a local checkpoint or a Hub repo id (offline, through a
huggingface_hub cache the test builds) -> a DT bundle that transformers still loads."""

import os

import numpy as np
import pytest
import torch

import gptrl
from gptrl.errors import BundleError

transformers = pytest.importorskip("transformers")  # dev extra; installed by make test
REPO, COMMIT = "gptrl-test/dt-hopper", "0123456789abcdef0123456789abcdef01234567"
MEAN, STD = np.linspace(-1, 1, 11), np.linspace(0.5, 2, 11)


def _checkpoint(folder, safe: bool = True):
    config = transformers.DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=32, n_layer=2, n_head=1,
                                                    max_ep_len=1000)
    torch.manual_seed(0)
    model = transformers.DecisionTransformerModel(config).eval()
    if safe:
        model.save_pretrained(folder)
    else:  # the older checkpoint layout: config.json + a pickled state dict
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return model


def test_local_import_keeps_the_checkpoint_loadable_by_transformers(tmp_path):
    hf = _checkpoint(tmp_path / "ckpt")
    out = gptrl.import_decision_transformer(tmp_path / "ckpt", tmp_path / "bundle", state_mean=MEAN, state_std=STD,
                                            target_return=3600.0, env_id="Hopper-v5")
    assert sorted(os.listdir(out)) == ["config.json", "gptrl_dt.json", "model.safetensors"]
    again = transformers.DecisionTransformerModel.from_pretrained(out).eval()
    for name, tensor in hf.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor)
    runner = gptrl.load_runner(out)
    runner.reset(np.zeros(11, np.float32))
    assert runner.act(np.zeros(11, np.float32)).shape == (3,)
    with pytest.raises(FileExistsError):
        gptrl.import_decision_transformer(tmp_path / "ckpt", out, state_mean=MEAN, state_std=STD)


@pytest.fixture
def hub_cache(tmp_path):
    """A huggingface_hub cache holding one Decision Transformer repo saved as pytorch_model.bin."""
    snapshot = tmp_path / "cache" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    _checkpoint(snapshot, safe=False)
    refs = tmp_path / "cache" / f"models--{REPO.replace('/', '--')}" / "refs"
    refs.mkdir()
    (refs / "main").write_text(COMMIT)
    return tmp_path / "cache"


def test_hub_import_offline_through_the_cli(hub_cache, tmp_path):
    from gptrl.cli import main

    mean = ",".join(f"{v:.6f}" for v in MEAN)
    std = ",".join(f"{v:.6f}" for v in STD)
    assert main(["dt-import", REPO, str(tmp_path / "b"), f"--state-mean={mean}", f"--state-std={std}", "--offline",
                 "--cache-dir", str(hub_cache), "--env", "Hopper-v5", "--target-return", "3600"]) == 0
    assert sorted(os.listdir(tmp_path / "b")) == ["config.json", "gptrl_dt.json", "pytorch_model.bin"]
    from gptrl.cli import inspect_bundle

    info = inspect_bundle(str(tmp_path / "b"))
    assert info["weights"] == "pytorch_model.bin" and info["env_id"] == "Hopper-v5"
    assert transformers.DecisionTransformerModel.from_pretrained(tmp_path / "b") is not None
    with pytest.raises(BundleError, match="could not be fetched"):
        gptrl.import_decision_transformer("someone/else", tmp_path / "c", state_mean=MEAN, state_std=STD,
                                          cache_dir=hub_cache, local_files_only=True)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"state_mean": MEAN[:5]}, BundleError, "'state_mean' has 5 entries, expected state_dim 11"),
    ({"state_std": -STD}, BundleError, "'state_std' must be positive"),
    ({"scale": 0.0}, BundleError, "'scale' must be a positive number"),
    ({"target_return": float("inf")}, BundleError, "'target_return' must be finite"),
])
def test_bad_import_arguments_are_refused_before_writing(tmp_path, kwargs, error, message):
    _checkpoint(tmp_path / "ckpt")
    args = {"state_mean": MEAN, "state_std": STD, **kwargs}
    with pytest.raises(error, match=message):
        gptrl.import_decision_transformer(tmp_path / "ckpt", tmp_path / "bundle", **args)
    assert not (tmp_path / "bundle").exists()


def test_a_config_that_is_not_a_dt_is_refused(tmp_path):
    from gptrl.cli import main

    folder = tmp_path / "ckpt"
    _checkpoint(folder)
    text = (folder / "config.json").read_text().replace('"decision_transformer"', '"gpt2"')
    (folder / "config.json").write_text(text)
    with pytest.raises(BundleError, match="not a Decision Transformer config"):
        gptrl.import_decision_transformer(folder, tmp_path / "bundle", state_mean=MEAN, state_std=STD)
    assert main(["dt-import", str(folder), str(tmp_path / "x"), "--state-mean", "1,2", "--state-std", "1,2"]) == 2
