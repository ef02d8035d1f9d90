"""The model cards' plots are real PNG files drawn from the data given."""

import numpy as np
from PIL import Image

from gptrl.training.plots import plot_conditioning, plot_returns, plot_training


def _png(path):
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    return np.asarray(image.convert("L"), dtype=float)


def test_plots_are_written_and_depend_on_the_data(tmp_path):
    history = [{"step": s, "action_mse": 0.1 / s, "return_mean": 100.0 * s, "return_std": 5.0} for s in (1, 2, 3)]
    other = [{**r, "return_mean": -r["return_mean"]} for r in history]
    a = _png(plot_training(history, tmp_path / "train.png", title="Hopper-v5"))
    assert np.array_equal(a, _png(plot_training(history, tmp_path / "again.png", title="Hopper-v5")))  # deterministic
    assert _differ(a, _png(plot_training(other, tmp_path / "train2.png", title="Hopper-v5")))  # same title, other data
    returns = list(np.linspace(3000, 3300, 50))
    lines = {"teacher": 3220.6, "reference project": 2836.3}
    r = _png(plot_returns(returns, tmp_path / "returns.png", lines=lines))
    assert _differ(r, _png(plot_returns(returns[::-1], tmp_path / "returns2.png", lines=lines)))
    cond = ([500, 1500, 2500, 3500], [600, 1400, 2400, 3100], [50, 80, 120, 90])
    means = {"expert": 2338.8, "medium": 994.5}
    c = _png(plot_conditioning(*cond, tmp_path / "cond.png", data_means=means))
    assert _differ(c, _png(plot_conditioning(cond[0], cond[1][::-1], cond[2], tmp_path / "cond2.png",
                                             data_means=means)))


def _differ(a, b) -> bool:
    return a.shape != b.shape or bool(np.abs(a - b).mean() > 0)


def test_training_caption_says_whether_the_plotted_run_made_the_bundle(tmp_path, monkeypatch):
    from gptrl.training import model_card

    bundle, run = tmp_path / "bundle", tmp_path / "run"
    (run / "best").mkdir(parents=True)
    bundle.mkdir()
    (bundle / "model.safetensors").write_bytes(b"shipped weights")
    card = {"return_mean": 3240.4, "return_std": 8.47}
    history = {"config": {"eval_seed": 1000, "eval_episodes": 10},
               "best": {"step": 2000, "return_mean": 3236.32, "return_std": 72.69}}
    measured = []
    monkeypatch.setattr(model_card, "measure", lambda d, num_envs=1: measured.append((d, num_envs)) or
                        {"return_mean": 2866.97, "return_std": 565.3})

    (run / "best" / "model.safetensors").write_bytes(b"shipped weights")
    same = model_card.training_caption(bundle, run, history, card)
    assert same.endswith("is this bundle.") and "step 2,000, scored 3236.3 +- 72.7" in same and not measured

    (run / "best" / "model.safetensors").write_bytes(b"other weights")
    other = model_card.training_caption(bundle, run, history, card, num_envs=10)
    assert measured == [(run / "best", 10)]
    assert "not the same run" in other and "2866.97 +- 565.30 (this bundle: 3240.40 +- 8.47)" in other
