"""Closed-loop reproduction of the shipped model cards (``make verify-cards``).

Every measurement a card records (``eval.json``, and a Decision Transformer's ``conditioning.json`` rows) is run
again with the card's own command and compared seed by seed. A closed-loop return of a chaotic env depends on the
float rounding of every step, so on a CPU or package set other than the card's some seeds differ without anything
being wrong; the report therefore first says whether this machine matches the card's provenance, then lists every
seed that differs instead of stopping at the first. It exits with status 1 only where the provenance matches and a
seed still differs (a regression); elsewhere differences are reported, not failed. The per-step exactness that
holds on any x86-64 CPU is tests/test_trajectories.py.

    python -m gptrl.training.verify_cards [BUNDLE ...] [--out REPORT.md]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gptrl.fileio import read_json, write_text
from gptrl.provenance import differences, provenance, summary

ROOT = Path(__file__).resolve().parents[2]
RELATIVE_TOLERANCE = 1e-9  # "the same return": equal up to the printing of a float64


@dataclass
class Check:
    """One card measurement against its re-run."""

    bundle: str
    label: str
    card: dict
    here: dict
    setup: list[str]  # provenance differences (empty: this machine matches the card's)
    differing: list[int] = field(default_factory=list)  # indices of seeds whose return or length differ

    @property
    def seeds(self) -> list[int]:
        return list(range(self.card["seeds"][0], self.card["seeds"][1] + 1))

    @property
    def regression(self) -> bool:
        return bool(self.differing) and not self.setup


def measurements(bundle: Path) -> list[tuple[str, dict]]:
    """(label, recorded measurement) for everything the card of ``bundle`` records."""
    found = [("eval.json", read_json(bundle / "eval.json"))]
    if (bundle / "conditioning.json").is_file():
        found += [(f"target {row['target']:g}", row) for row in read_json(bundle / "conditioning.json")]
    return found


def rerun(card: dict) -> dict:
    """The card's own command (``gptrl eval ... --json``), run again from the repository root."""
    args = shlex.split(card["command"])[2:]
    done = subprocess.run([sys.executable, "-m", "gptrl.cli", "eval", *args, "--json"], check=True,
                          capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout)


def differing_seeds(card: dict, here: dict) -> list[int]:
    """Indices of the episodes whose length or return differ."""
    out = []
    for i, (a, b, n, m) in enumerate(zip(card["returns"], here["returns"], card["lengths"], here["lengths"])):
        if n != m or abs(a - b) > RELATIVE_TOLERANCE * max(abs(a), 1.0):
            out.append(i)
    return out


def verify(bundle: Path) -> list[Check]:
    checks = []
    for label, card in measurements(bundle):
        here = rerun(card)
        setup = differences(card.get("provenance"), here["provenance"])
        checks.append(Check(bundle.name, label, card, here, setup, differing_seeds(card, here)))
        print(f"{bundle.name} {label}: {len(checks[-1].differing)} of {len(card['returns'])} seeds differ",
              flush=True)
    return checks


def seed_lines(check: Check, limit: int = 8) -> str:
    """The differing seeds, card -> here (the first ``limit``)."""
    parts = [f"seed {check.seeds[i]}: {check.card['returns'][i]:.2f} -> {check.here['returns'][i]:.2f}"
             + ("" if check.card["lengths"][i] == check.here["lengths"][i]
                else f" ({check.card['lengths'][i]} -> {check.here['lengths'][i]} steps)")
             for i in check.differing[:limit]]
    more = len(check.differing) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def report(checks: list[Check]) -> str:
    """The markdown report: this machine, then per bundle whether its setup matches and what differs per seed."""
    lines = [f"This machine: {summary(provenance(None))}.", ""]
    for name in dict.fromkeys(c.bundle for c in checks):
        mine = [c for c in checks if c.bundle == name]
        setup = mine[0].setup
        verdict = ("this machine matches the card's provenance." if not setup else
                   "this machine differs from the card's provenance: " + "; ".join(setup) + ".")
        lines += [f"**{name}**: {verdict}", "",
                  "| measurement | seeds equal | card mean | here mean | max abs diff | differing seeds (card -> here) "
                  "|",
                  "|---|---|---|---|---|---|"]
        for c in mine:
            diff = max(abs(a - b) for a, b in zip(c.card["returns"], c.here["returns"]))
            lines.append(f"| {c.label} | {len(c.seeds) - len(c.differing)} of {len(c.seeds)} | "
                         f"{c.card['return_mean']:.2f} | {c.here['return_mean']:.2f} | {diff:.3g} | "
                         f"{seed_lines(c) or '-'} |")
        lines.append("")
    regressions = [f"{c.bundle} {c.label}" for c in checks if c.regression]
    lines.append("Regressions (same provenance, different numbers): " + (", ".join(regressions) or "none") + ".")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="*", type=Path, help="bundle folders (default: every bundles/* with eval.json)")
    p.add_argument("--out", type=Path, help="also write the report to this file")
    a = p.parse_args(argv)
    bundles = a.bundles or sorted(q.parent for q in (ROOT / "bundles").glob("*/eval.json"))
    checks = [c for b in bundles for c in verify(b)]
    text = report(checks)
    print(text)
    if a.out:
        write_text(a.out, text)
    return 1 if any(c.regression for c in checks) else 0


if __name__ == "__main__":
    from gptrl.cli import run_script

    raise SystemExit(run_script("gptrl.training.verify_cards", main))
