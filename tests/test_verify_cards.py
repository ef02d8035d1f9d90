"""make verify-cards: a card's closed-loop numbers re-run with its own command, compared seed by seed, with the
machine's provenance checked first."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from gptrl.training import verify_cards

HOPPER = Path(__file__).parents[1] / "bundles" / "hopper-v5"


def _carded(tmp_path) -> Path:
    """A copy of hopper-v5 whose card is a 3-episode, 40-step measurement made here and now."""
    bundle = shutil.copytree(HOPPER, tmp_path / "hopper-v5")
    args = [str(bundle), "--episodes", "3", "--seed", "5", "--max-steps", "40"]
    done = subprocess.run([sys.executable, "-m", "gptrl.cli", "eval", *args, "--json"], check=True,
                          capture_output=True, text=True)
    (bundle / "eval.json").write_text(json.dumps({"command": "gptrl eval " + " ".join(args), **json.loads(done.stdout)}))
    return bundle


def test_a_card_made_here_reproduces_and_a_changed_seed_is_reported_as_a_regression(tmp_path):
    bundle = _carded(tmp_path)
    [check] = verify_cards.verify(bundle)
    assert check.setup == [] and check.differing == [] and check.seeds == [5, 6, 7]
    card = json.loads((bundle / "eval.json").read_text())
    card["returns"][1] += 0.5
    (bundle / "eval.json").write_text(json.dumps(card))
    assert verify_cards.main([str(bundle), "--out", str(tmp_path / "report.md")]) == 1
    text = (tmp_path / "report.md").read_text()
    assert "this machine matches the card's provenance" in text and "| eval.json | 2 of 3 |" in text
    assert f"seed 6: {card['returns'][1]:.2f} -> {card['returns'][1] - 0.5:.2f}" in text
    assert "Regressions (same provenance, different numbers): hopper-v5 eval.json." in text


def test_on_another_setup_differences_are_reported_not_failed(tmp_path):
    bundle = _carded(tmp_path)
    card = json.loads((bundle / "eval.json").read_text())
    card["provenance"]["cpu"]["vector_isa"] = "avx2"
    card["returns"][0] += 1.0
    (bundle / "eval.json").write_text(json.dumps(card))
    assert verify_cards.main([str(bundle), "--out", str(tmp_path / "report.md")]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "differs from the card's provenance: cpu.vector_isa avx2 (card)" in text
    assert "seed 5:" in text and "Regressions (same provenance, different numbers): none." in text
