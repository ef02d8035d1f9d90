"""Typed access to decoded JSON that names the file and the dotted key in every error."""

from __future__ import annotations

from typing import Any

from gptrl.errors import BundleError

_MISSING: Any = object()
_KIND_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "list": "a list",
    "dict": "a JSON object",
}


def describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, {"bool": bool, "str": str, "list": list, "dict": dict}[kind])


class JsonReader:
    """A JSON object read key by key; ``seen`` records every key asked for, so the rest are known to be extra."""

    def __init__(self, data: Any, source: str, prefix: str = ""):
        self.source, self.prefix = source, prefix
        if not isinstance(data, dict):
            where = f"key '{prefix.rstrip('.')}'" if prefix else "the top level"
            raise self.error(f"{where} must be a JSON object, got {describe(data)}")
        self.data = data
        self.seen: set[str] = set()

    def error(self, message: str) -> BundleError:
        return BundleError(f"{self.source}: {message}")

    def key(self, name: str) -> str:
        return f"'{self.prefix}{name}'"

    def get(self, name: str, kind: str, default: Any = _MISSING) -> Any:
        """The value of ``name``, checked to be of ``kind``; a missing or null key takes ``default``."""
        self.seen.add(name)
        if name not in self.data or (self.data[name] is None and default is not _MISSING):
            if default is _MISSING:
                raise self.error(f"missing required key {self.key(name)}")
            return default
        value = self.data[name]
        if not _is_kind(value, kind):
            raise self.error(f"key {self.key(name)} must be {_KIND_NAMES[kind]}, got {describe(value)}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        """A boolean that may be missing (``default``) but not null: Python readers of the same file (transformers)
        take null as false, so reading it as a ``default`` of true would run another model."""
        if self.data.get(name, False) is None:
            self.seen.add(name)
            raise self.error(f"key {self.key(name)} must be true or false, got null")
        return self.get(name, "bool", default)

    def positive(self, name: str, default: Any = _MISSING, *, limit: int | None = None) -> int:
        """A positive integer, at most ``limit``."""
        value = self.get(name, "int", default)
        if value <= 0:
            raise self.error(f"key {self.key(name)} must be positive, got {value}")
        if limit is not None and value > limit:
            raise self.error(f"key {self.key(name)} = {value} exceeds gptrl's limit of {limit} (docs/format.md)")
        return value

    def child(self, name: str, default: Any = _MISSING) -> JsonReader:
        value = self.get(name, "dict", default)
        return JsonReader(value, self.source, f"{self.prefix}{name}.")

    def unread(self) -> dict[str, Any]:
        """The keys no ``get`` asked for."""
        return {k: v for k, v in self.data.items() if k not in self.seen}
