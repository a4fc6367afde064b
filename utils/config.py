"""JSON configs with ``inherit_from`` chains, ``--custom_args`` overrides and schema validation.

Resolution (docs/TRAINING.md "Config keys"; same semantics as the original, i.e. as zsvision's ``load_json_config`` + mergedeep REPLACE):

* a file may name a parent with ``"inherit_from": "<path relative to this file>"``; chains of any depth;
* nested dicts are merged key by key, the child wins on leaves, **lists are replaced** (never concatenated);
* ``configs/base_config.json`` is the schema: it holds every key with its default. Every key of every file and of
  every override must exist there with the same JSON type (an int is accepted where a float is expected). The
  schema is also merged underneath every config, so the resolved dict always holds every key;
* ``--custom_args "a.b=1,c.d=x"`` overrides leaves after the merge (values parsed as JSON when possible, else
  taken as a string).

Every problem raises :class:`utils.errors.UserError` with a one-line message naming the file and the dotted key.
The resolved dict is plain JSON (no ``inherit_from``), ready to be saved as a run's ``config.json``.

``python -m utils.config CFG [--custom_args ...]`` prints the resolved config.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from utils.errors import UserError, run_cli

INHERIT_KEY = "inherit_from"
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "configs" / "base_config.json"

# Split "a.b=1,c.d=[1,2],e=x" on the commas that start a new "key=" (so JSON lists/objects may hold commas).
_ITEM_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*\s*=)")
_KEY_RE = re.compile(r"^[A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*$")


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike, custom_args: str | None = None,
                schema_path: str | os.PathLike | None = None) -> dict:
    """Resolve ``path`` (inheritance, schema defaults, overrides), validate it and return a plain dict."""
    schema_file = Path(schema_path) if schema_path is not None else SCHEMA_PATH
    schema = _read_json_file(schema_file)
    if INHERIT_KEY in schema:
        raise UserError(f"{schema_file}: {INHERIT_KEY}: the schema file may not inherit")
    merged = _resolve_chain(Path(path), schema, schema_file, stack=())
    resolved = merge(copy.deepcopy(schema), merged)
    for keypath, raw in _split_custom_args(custom_args):
        _apply_override(resolved, schema, keypath, raw)
    from utils.config_rules import check_values  # value ranges and unsupported settings (one line per problem)
    check_values(resolved, f"{path}{' + --custom_args' if custom_args else ''}")
    return resolved


def parse_custom_args(custom_args: str | None) -> list[tuple[str, Any]]:
    """``"a.b=1,c.d=x"`` -> ``[("a.b", 1), ("c.d", "x")]``. Values are parsed as JSON when possible, else kept as
    strings; a value may itself contain commas when it is a JSON list/object (``experts.modalities=["audio","vggsound"]``)
    or a bracketed list of bare words (``experts.modalities=[audio,vggsound]``)."""
    return [(key, _parse_value(raw)) for key, raw in _split_custom_args(custom_args)]


def _split_custom_args(custom_args: str | None) -> list[tuple[str, str]]:
    if custom_args is None or not custom_args.strip():
        return []
    out = []
    for item in _ITEM_SPLIT.split(custom_args.strip()):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise UserError(f"--custom_args: '{item}': expected key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not _KEY_RE.match(key):
            raise UserError(f"--custom_args: '{key}': not a dotted key path")
        out.append((key, raw.strip()))
    return out


def merge(parent: dict, child: dict) -> dict:
    """Recursive merge in place into ``parent``: dicts key by key, child wins on leaves, lists replaced."""
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(parent.get(key), dict):
            merge(parent[key], value)
        else:
            parent[key] = copy.deepcopy(value)
    return parent


def first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any]:
    """The dotted key path of the first place (keys sorted) where nested dicts ``a`` and ``b`` differ, with both
    values there (``("", a, b)`` when they differ at the top)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip("."), a, b


def config_hash(config: dict) -> str:
    """Short sha1 (12 hex digits) of the canonical JSON of ``config`` (sorted keys, no spaces)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:12]


def get_key(config: dict, dotted: str) -> Any:
    """``get_key(cfg, "data_loader.args.batch_size")``."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"config: {dotted}: no such key")
        node = node[part]
    return node


# ----------------------------------------------------------------------------------------------------------------
# internals
# ----------------------------------------------------------------------------------------------------------------
class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _read_json_file(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = json.loads(path.read_text(), object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except _DuplicateKey as err:
        raise UserError(f"{path}: key {str(err)!r} appears twice in one object (JSON keeps only the last silently)") \
            from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a JSON object")
    return data


def _resolve_chain(path: Path, schema: dict, schema_file: Path, stack: tuple[Path, ...]) -> dict:
    real = path.resolve()
    if real in stack:
        cycle = " -> ".join(str(p) for p in (*stack, real))
        raise UserError(f"{path}: {INHERIT_KEY}: inheritance cycle ({cycle})")
    data = _read_json_file(path)
    parent_name = data.pop(INHERIT_KEY, None)
    if real == schema_file.resolve():
        return data  # the schema itself: valid by definition
    _validate(data, schema, str(path), prefix="")
    if parent_name is None:
        return data
    if not isinstance(parent_name, str) or not parent_name:
        raise UserError(f"{path}: {INHERIT_KEY}: must be a non-empty string (a path relative to this file)")
    parent_path = path.parent / parent_name
    if not parent_path.is_file():
        raise UserError(f"{path}: {INHERIT_KEY}: parent file {parent_path} not found")
    parent = _resolve_chain(parent_path, schema, schema_file, (*stack, real))
    return merge(parent, data)


_JSON_TYPES = ((type(None), "null"), (bool, "bool"), (int, "int"), (float, "float"), (str, "string"),
               (list, "list"), (dict, "object"))  # bool before int: True is an int to Python


def _json_type(value: Any) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__)


def _type_ok(value: Any, default: Any) -> bool:
    want, got = _json_type(default), _json_type(value)
    if want == "null":  # a null default accepts anything
        return True
    if want == got:
        if want == "list" and default:
            item_type = _json_type(default[0])
            return all(_type_ok(v, default[0]) for v in value) if item_type != "null" else True
        return True
    return want == "float" and got == "int"


def _validate(data: dict, schema: dict, where: str, prefix: str) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key == INHERIT_KEY and prefix:
            raise UserError(f"{where}: {dotted}: {INHERIT_KEY} is only allowed at the top level")
        if key not in schema:
            raise UserError(f"{where}: {dotted}: unknown key (not in {SCHEMA_PATH.name}{_suggest(key, schema)})")
        default = schema[key]
        if not _type_ok(value, default):
            raise UserError(f"{where}: {dotted}: expected {_describe(default)}, got {_json_type(value)} {json.dumps(value)}")
        if isinstance(value, dict) and isinstance(default, dict) and default:
            _validate(value, default, where, prefix=f"{dotted}.")


def _describe(default: Any) -> str:
    kind = _json_type(default)
    if kind == "list" and default:
        return f"list of {_json_type(default[0])}"
    return kind


def _suggest(key: str, schema: dict) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(schema), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _parse_value(raw: str) -> Any:
    if raw in ("True", "False"):
        return raw == "True"
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    if raw.startswith("[") and raw.endswith("]"):  # [audio,vggsound]: bracketed bare words
        inner = raw[1:-1].strip()
        return [_parse_value(part.strip()) for part in inner.split(",")] if inner else []
    return raw


def _apply_override(config: dict, schema: dict, keypath: str, raw: str) -> None:
    value = _parse_value(raw)
    where = "--custom_args"
    parts = keypath.split(".")
    node, snode = config, schema
    for i, part in enumerate(parts):
        dotted = ".".join(parts[: i + 1])
        if not isinstance(snode, dict) or part not in snode:
            hint = _suggest(part, snode) if isinstance(snode, dict) else ""
            raise UserError(f"{where}: {dotted}: unknown key (not in {SCHEMA_PATH.name}{hint})")
        if i < len(parts) - 1:
            node, snode = node[part], snode[part]
    last = parts[-1]
    default = snode[last]
    if _json_type(default) == "string" and not isinstance(value, str):
        value = raw  # "split_name=1" means the string "1": the expected type is known, so keep the raw text
    if not _type_ok(value, default):
        raise UserError(f"{where}: {keypath}: expected {_describe(default)}, got {_json_type(value)} {json.dumps(value)}")
    if isinstance(value, dict) and default:
        _validate(value, default, where, prefix=f"{keypath}.")
        merge(node[last], value)
    else:
        node[last] = copy.deepcopy(value)


# ----------------------------------------------------------------------------------------------------------------
# CLI: print the resolved config
# ----------------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    from utils.cli import ArgumentParser  # one-line usage errors, exit 2

    parser = ArgumentParser(
        prog="python -m utils.config",
        description="Print the fully resolved config (inheritance + schema defaults + overrides) as JSON.")
    parser.add_argument("config", help="config JSON file, e.g. configs/clotho/train-vggish-vggsound.json")
    parser.add_argument("--custom_args", default=None,
                        help='overrides "key.sub=value,..." (values parsed as JSON when possible)')
    parser.add_argument("--hash", action="store_true", help="print only the config hash")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.custom_args)
    print(config_hash(config) if args.hash else json.dumps(config, indent=2))


if __name__ == "__main__":
    sys.exit(run_cli(main))
