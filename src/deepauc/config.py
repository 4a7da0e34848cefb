"""Strict YAML configs: a mapping checked against a nested dataclass before any work, every
unknown key, wrong type or impossible value reported with the file and the dotted key."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from deepauc.io import is_safe_name

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file does not match its schema; the message names file and key."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is typing.Literal:
        # YAML 1.1 reads a bare off/on as a bool: `amp: off` means the option "off"
        if isinstance(value, bool) and {"off", "on"} & set(args):
            value = "on" if value else "off"
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        inner = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, inner, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(typing.cast(type, tp), value, key)
    if tp is float:
        return _finite_float(value, key)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


# YAML 1.1 reads 1e-3 (no dot) as a string; a float key takes it as the number it means.
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _finite_float(value: Any, key: str) -> float:
    """``value`` as a finite float; numeric text such as ``1e-3`` is accepted."""
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return float(value)


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad types."""
    where = prefix or "<top level>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        dotted = [f"{prefix}.{k}" if prefix else str(k) for k in unknown]
        raise ConfigError(f"unknown key(s) {dotted}; allowed under {where}: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"missing required key(s) {[f'{prefix}.{m}' if prefix else m for m in missing]}"
        )
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as err:
            raise ConfigError(f"{prefix + ': ' if prefix else ''}{err}") from None
    return obj


def check_dir_name(value: str, key: str = "name") -> None:
    """Raise ValueError unless ``value`` is one plain directory name (a run's output folder)."""
    if not isinstance(value, str) or not is_safe_name(value):
        raise ValueError(
            f"{key} must be a plain directory name (no '/', '\\', ':', '..' or control "
            f"characters), got {value!r}"
        )


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``dotted.key=value`` strings (values parsed as YAML) to a nested dict in place.

    This is how the Makefile points one experiment YAML at another data root
    (``--set data.root=/kaggle/input``) without a second copy of the file.
    """
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a mapping")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            reason = " ".join(str(err).split())
            raise ConfigError(f"override {item!r}: value is not valid YAML ({reason})") from None
    return data


def add_config_arguments(parser) -> None:
    """The ``--config`` and ``--set`` flags shared by every config-driven subcommand."""
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set data.root=data/raw (repeatable)",
    )


def load_config(path: str | Path, cls: type[T], overrides: list[str] | None = None) -> T:
    """Read YAML file ``path`` (its ``base:`` chain, then ``key=value`` overrides) into ``cls``.

    Errors name the file and the dotted key.
    """
    path = Path(path)
    data = read_config_mapping(path)
    try:
        if overrides:
            data = apply_overrides(data, overrides)
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def read_config_mapping(path: str | Path) -> dict:
    """The mapping a config file stands for: its ``base:`` file's, with its own keys on top.

    ``base: _name.yaml`` names a file beside it whose name starts with ``_`` (so ``make``
    can list every file a config reads: ``configs/EXP/_*.yaml``); a base may have a base.
    Mappings merge key by key; any other value (a list included) replaces the base's.
    """
    return _read_with_bases(Path(path), [])


def _read_with_bases(path: Path, chain: list[Path]) -> dict:
    if not path.is_file():
        where = f" (base of {chain[-1]})" if chain else ""
        raise FileNotFoundError(f"config file not found: {path}{where}")
    if path.resolve() in [p.resolve() for p in chain]:
        raise ConfigError(f"{chain[0]}: base files form a loop: {' -> '.join(map(str, chain))}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: <top level>: expected a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or "/" in base or not re.fullmatch(r"_[^/\\]*\.yaml", base):
        raise ConfigError(
            f"{path}: base: expected the name of a _*.yaml file in the same folder, got {base!r}"
        )
    return _merged(_read_with_bases(path.parent / base, [*chain, path]), data)


def _merged(base: dict, top: dict) -> dict:
    """``base`` with ``top``'s keys on top, mappings merged key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(obj: Any) -> dict:
    """The plain-dict form of a config dataclass (for logs and checkpoints)."""
    return dataclasses.asdict(obj)
