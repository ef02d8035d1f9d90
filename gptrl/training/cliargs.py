"""CleanRL-style command lines: a dataclass of settings whose trailing ``# comments`` are the ``--help`` text.

One source for a setting's default and its meaning: ``add_arguments(parser, Args)`` adds ``--field-name`` for every
field (bools read as 1/true/yes), each help line being the field's comment and its default, and
``from_namespace(Args, parsed)`` builds the dataclass back.
"""

from __future__ import annotations

import argparse
import inspect
from dataclasses import fields
from typing import Any

__all__ = ["add_arguments", "field_help", "from_namespace"]


def field_help(cls: type) -> list[str]:
    """Each field's trailing comment in the source of the dataclass ``cls`` ("" where it has none), in field order."""
    names = {f.name for f in fields(cls)}
    comments: dict[str, str] = {}
    for line in inspect.getsource(cls).splitlines():
        name = line.strip().split(":")[0]
        if "#" in line and name in names and name not in comments:
            comments[name] = line.split("#", 1)[1].strip()
    return [comments.get(f.name, "") for f in fields(cls)]


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """``--field-name`` for every field of ``cls`` but ``skip``, typed by its default, helped by its comment."""
    for f, help_text in zip(fields(cls), field_help(cls)):
        if f.name in skip:
            continue
        kind = f.type if isinstance(f.type, type) else type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=_bool if kind is bool else kind, default=f.default,
                            metavar="BOOL" if kind is bool else None, help=f"{help_text} (default {f.default})")


def from_namespace(cls: type, parsed: argparse.Namespace, **given: Any) -> Any:
    """The dataclass ``cls`` from parsed arguments (``given`` fills the fields that are not options)."""
    return cls(**{f.name: given[f.name] if f.name in given else getattr(parsed, f.name) for f in fields(cls)})
