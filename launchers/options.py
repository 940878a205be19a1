"""Options dataclasses are the schema: build one from keywords, refusing unknown keys by listing
the valid ones with their defaults (used by launchers and by ipcluster's configuration)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def describe(options_cls: type) -> str:
    """``name=default`` for each field of an options dataclass."""
    parts = []
    for f in dataclasses.fields(options_cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "<required>"
        parts.append(f"{f.name}={default}")
    return ", ".join(parts)


def check_keys(options_cls: type, keys, where: str) -> None:
    valid = {f.name for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise TypeError(
            f"unknown {where} option(s) {', '.join(map(repr, unknown))}; "
            f"valid options and their defaults: {describe(options_cls)}"
        )


def build(options_cls: type[T], where: str, values: dict[str, Any]) -> T:
    check_keys(options_cls, values, where)
    return options_cls(**values)
