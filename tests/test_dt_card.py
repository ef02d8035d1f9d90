"""The Decision Transformer model card's own rules: the sweep's targets and what the card concludes from it."""

import numpy as np

from gptrl.training.dt_card import conditioning_verdict, sweep_targets


def test_sweep_targets_span_the_data_evenly():
    assert sweep_targets(np.array([738.4, 3256.7, 1500.0])) == [750.0, 1250.0, 1750.0, 2250.0, 2750.0, 3250.0]
    assert sweep_targets(np.array([0.0, 1000.0]), count=5) == [0.0, 250.0, 500.0, 750.0, 1000.0]


def _rows(means):
    return [{"target": 1000.0 * (i + 1), "return_mean": m} for i, m in enumerate(means)]


def test_verdict_says_whether_the_return_rises_and_reaches_the_expert_mean():
    rising, close = conditioning_verdict(_rows([900.0, 1500.0, 2200.0]), expert_mean=2400.0)
    assert "**yes**" in rising and "within 10%" in close and "**not" not in close
    rising, close = conditioning_verdict(_rows([900.0, 1700.0, 1600.0, 2000.0]), expert_mean=2400.0)
    assert "**no** (it does not rise from 2000 -> 3000)" in rising
    assert "**not within** 10%" in close and ">= 2160.0" in close


def test_middle_note_counts_the_episodes_in_the_middle_third():
    from gptrl.training.dt_card import middle_note

    data = {"a": {"returns": [0.0, 100.0, 400.0]}, "b": {"returns": [500.0, 900.0]}}
    assert middle_note(data)[0].startswith("2 of the data's 5 episodes have a return in the middle third of its "
                                           "range (300 to 600).")
