"""The family registry: the one place that maps a bundle folder (or an exported graph's ``gptrl.format`` metadata) to
its model family, and names what each family provides.

A family's parts live on both sides of the torch line, so the registry names them as ``"module:function"`` and
imports only the part a caller asks for (``Family.part``): the torch-free runtime resolves ``policy`` and never
imports the torch side. tests/test_families.py checks that every name resolves and sits in its component.
docs/architecture.md says where a new family's parts go.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptrl.bundle.dt import DT_FORMAT, DT_STATEFUL_FORMAT, is_dt_folder
from gptrl.bundle.policy_graph import FORMATS
from gptrl.errors import BundleError

# Which component each part belongs in (the dependency rule of docs/architecture.md).
PART_COMPONENTS = {"config": "gptrl.bundle", "runner": "gptrl.exporter", "export": "gptrl.exporter",
                   "graphs": "gptrl.graph", "policy": "gptrl.runtime", "inspect": "gptrl.cli"}


@dataclass(frozen=True)
class Family:
    name: str
    title: str  # how commands name it
    detect: Callable[[Path], bool]  # is this folder one of ours (the first family that says yes takes it)
    graph_formats: tuple[str, ...]  # the ``gptrl.format`` values of its exported graphs
    config: str  # reads and validates the folder's files (numpy)
    runner: str  # the torch reference runner of a folder: load(path, **serving) -> contract.Policy
    export: str  # writes the folder's verified policy.onnx: export(folder, out, variant=..., verify=..., ...)
    graphs: str  # its graph builders (numpy + onnx)
    policy: str  # the torch-free runtime policy of a loaded graph: load(session, props, path, **serving)
    inspect: str  # what ``gptrl inspect`` reports: (info dict, table rows)

    def part(self, name: str) -> Any:
        """The object a part names, imported now."""
        module, _, attr = getattr(self, name).partition(":")
        target = importlib.import_module(module)
        return getattr(target, attr) if attr else target


def _is_causal(path: Path) -> bool:
    return (path / "config.json").is_file()


FAMILIES: tuple[Family, ...] = (
    Family("dt", "Decision Transformer", is_dt_folder, (DT_FORMAT, DT_STATEFUL_FORMAT),
           config="gptrl.bundle.dt:load_dt_bundle", runner="gptrl.exporter.dt.runner:load_dt_runner",
           export="gptrl.exporter.dt.export:export_dt_onnx", graphs="gptrl.graph.dt",
           policy="gptrl.runtime.dt:load_dt_policy", inspect="gptrl.cli:inspect_dt_bundle"),
    Family("causal", "Causal GPT-RL", _is_causal, FORMATS,
           config="gptrl.bundle.bundle:load_bundle", runner="gptrl.exporter.causal.runner:load_runner",
           export="gptrl.exporter.onnx_export:export_causal_onnx", graphs="gptrl.graph.causal",
           policy="gptrl.runtime.policy:load_causal_policy", inspect="gptrl.cli:inspect_causal_bundle"),
)


def family_of_folder(path: str | Path) -> Family:
    """The family of a bundle folder; a folder no family reads is a BundleError."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle folder (it does not exist or is not a directory)")
    for family in FAMILIES:
        if family.detect(path):
            return family
    raise BundleError(f"{path / 'config.json'}: missing (a bundle needs config.json)")


def family_of_graph(props: dict[str, str], source: str) -> Family:
    """The family of an exported graph, from its ``gptrl.format`` metadata."""
    fmt = props.get("gptrl.format")
    for family in FAMILIES:
        if fmt in family.graph_formats:
            return family
    known = [f for family in FAMILIES for f in family.graph_formats]
    raise BundleError(f"{source}: not a gptrl policy graph (metadata 'gptrl.format' is {fmt!r}, expected one of "
                      f"{known}); export it with `gptrl export`")
