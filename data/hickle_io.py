"""Read ``clip_id -> array`` dicts from ``.hickle`` files: hickle 4 (the original archive) and hickle 5, with h5py.

Why not ``hickle.load``: hickle 5.0.3 reads a hickle-4 file correctly only when ``dill`` is installed (hickle 4 stored
every Python type as a dill pickle); without it, it returns a dict of "recovered" placeholders under quoted keys,
with warnings only, i.e. silently wrong data. Reading the two HDF5 layouts directly needs no unpickling of file
content, reads only the wanted clips, and fails loudly on anything it does not recognise.

Layouts (checked against files written by hickle 4.0.4 / h5py 2.10 under Python 3.7 and by hickle 5.0.3):

* hickle 4: ``/data`` is a group (``base_type`` "dict"); each item is a group named ``repr(key)`` with "/"
  replaced by two backslashes (``base_type`` "dict_item", ``key_base_type`` "str"), holding one dataset ``data``
  whose ``base_type`` is "ndarray" (an array) or "float" / "np_scalar" / "int" (a scalar, e.g. the NaN marker);
* hickle 5: ``/data`` is a group whose type is "dict"; each item is a dataset named ``"key"`` (``key_base_type``
  "str") whose type ("ndarray", "float", "np_scalar", ...) is a reference into ``/hickle_types_table``. Keys that
  contain "/" are stored as key/value sub-groups instead: those files go through ``hickle.load``.

Anything else (other versions, other value types) goes through ``hickle.load`` and is accepted only when it yields a
dict of str keys and float arrays / scalars without hickle's "data recovered" warnings.
"""
from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from utils.errors import UserError

ARRAY_TYPES = {"ndarray"}
SCALAR_TYPES = {"float", "np_scalar", "int"}


class _Unsupported(Exception):
    """The file is valid HDF5 but not a layout the direct reader knows: use hickle.load."""


def read_hickle_dict(path: Path, ids: Iterable[str]) -> dict[str, Any]:
    """Values of the ``ids`` that the hickle dict file ``path`` holds (the others are left out).

    Arrays come back with their stored dtype and bits; scalars as Python floats. Raises a one-line UserError naming
    the file when it is missing, not HDF5, truncated / corrupt, not a dict, or holds a value of another kind.
    """
    return dict(iter_hickle_dict(path, ids))


def iter_hickle_dict(path: Path, ids: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """``(clip id, value)`` for each of ``ids`` that the file holds, in ``ids`` order, read one clip at a time.

    The streaming form of :func:`read_hickle_dict` (same values, same errors): a loader copies each value where it
    belongs and drops it, so a CLOTHO-size expert file never sits in memory twice.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    ids = list(ids)
    import h5py

    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise UserError(f"{path}: not a readable HDF5/hickle file (truncated or corrupt? {_one_line(err)})") from None
    done: set[str] = set()
    try:
        with fh:
            version = _attr_str(fh.attrs.get("HICKLE_VERSION", ""))
            if version.startswith("4."):
                reader = _read_v4(fh, path, ids)
            elif version.startswith("5."):
                reader = _read_v5(fh, path, ids)
            else:
                raise _Unsupported
            for cid, value in reader:
                done.add(cid)
                yield cid, value
        return
    except _Unsupported:
        pass
    except UserError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as err:
        raise UserError(f"{path}: cannot be read (truncated or corrupt? {_one_line(err)})") from None
    for cid, value in _read_with_hickle(path, ids).items():  # a layout the direct reader does not know
        if cid not in done:
            yield cid, value


# ----------------------------------------------------------------------------------------------------------------
def _read_v4(fh, path: Path, ids: list[str]) -> Iterator[tuple[str, Any]]:
    import h5py

    root = fh.get("data")
    if not isinstance(root, h5py.Group) or _attr_str(root.attrs.get("base_type", "")) != "dict":
        kind = _attr_str(root.attrs.get("base_type", "?")) if root is not None else "nothing"
        raise UserError(f"{path}: expected a hickled dict clip_id -> array, the file holds a {kind}")
    names = {}
    for name in root:
        try:
            key = ast.literal_eval(name.replace("\\\\", "/"))
        except (ValueError, SyntaxError):
            raise _Unsupported from None
        if not isinstance(key, str):
            raise _Unsupported
        names[key] = name
    for cid in ids:
        name = names.get(cid)
        if name is None:
            continue
        node = root.get(f"{name}/data")
        if not isinstance(node, h5py.Dataset):
            raise _Unsupported
        if node.dtype.kind in "fiu":  # numbers: an array, or a scalar (the NaN marker); attrs not needed
            yield cid, (float(node[()]) if node.shape == () else node[()])
        else:
            yield cid, _value(node, _attr_str(node.attrs.get("base_type", "")), path, cid)


def _read_v5(fh, path: Path, ids: list[str]) -> Iterator[tuple[str, Any]]:
    """Clip by clip with h5py's low-level calls (object open, attribute and data reads): ~0.15 ms a clip instead
    of ~0.3 with the high-level ones (a CLOTHO-size run reads ~8,000 clips)."""
    import h5py

    root = fh.get("data")
    if not isinstance(root, h5py.Group):
        raise _Unsupported
    names: dict = {}
    kind = _v5_type(fh, root.id, names)
    if kind != "dict":
        raise UserError(f"{path}: expected a hickled dict clip_id -> array, the file holds a {kind}")
    if any(name.startswith("data") and not name.startswith('"') for name in root):
        raise _Unsupported  # key/value sub-groups (keys with "/" or non-str keys)
    for cid in ids:
        if "/" in cid:
            continue
        try:
            node = h5py.h5o.open(root.id, f'"{cid}"'.encode("utf-8"))
        except KeyError:
            continue  # not in this file
        if not isinstance(node, h5py.h5d.DatasetID) or _attr_str(_attr(node, b"key_base_type") or "") != "str":
            raise _Unsupported
        yield cid, _value_v5(node, _v5_type(fh, node, names), path, cid)


def _v5_type(fh, object_id, names: dict) -> str:
    """The hickle-5 type name of the object ``object_id`` (e.g. "ndarray"), resolved once per type entry.

    ``names`` caches entry address -> name: a clip costs one low-level dereference (~15 us) instead of two
    high-level ones and an attribute read (~100 us; 10,000 clip reads in a CLOTHO-size training run).
    """
    import h5py

    ref = _attr(object_id, b"type")
    if not isinstance(ref, h5py.h5r.Reference):
        raise _Unsupported
    key = _address(h5py.h5r.dereference(ref, fh.id))
    if key not in names:
        entry = fh[ref]
        base = entry.attrs.get("base_type")
        if base is None:
            raise _Unsupported
        # ``.name`` searches the file for a path (~17 ms each on a CLOTHO-size file): once per type entry
        names[key] = fh[base].name.rsplit("/", 1)[-1]
    return names[key]


def _address(object_id) -> Any:
    import h5py

    info = h5py.h5o.get_info(object_id)
    return getattr(info, "token", None) or info.addr


def _attr(object_id, name: bytes) -> Any:
    """An attribute's value (a scalar unwrapped) through h5py's low-level API, or None when it is absent."""
    import h5py

    try:
        attr = h5py.h5a.open(object_id, name)
    except KeyError:
        return None
    value = np.empty(attr.shape, dtype=attr.dtype)
    attr.read(value)
    return value[()] if value.shape == () else value


def _value_v5(node, kind: str, path: Path, cid: str) -> Any:
    """:func:`_value` of a hickle-5 dataset given by its low-level id (numbers read straight into an array)."""
    import h5py

    if node.dtype.kind not in "fiu" or node.shape is None:
        return _value(h5py.Dataset(node), kind, path, cid)  # anything unusual: the high-level path
    if kind in ARRAY_TYPES:
        arr = np.empty(node.shape, dtype=node.dtype)
        node.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
        stored = _attr(node, b"np_dtype")
        if stored is not None and np.dtype(_attr_str(stored)) != arr.dtype:
            arr = arr.astype(np.dtype(_attr_str(stored)))
        return arr
    return _value(h5py.Dataset(node), kind, path, cid)  # scalars (the NaN marker of a missing clip) and errors


def _value(node, kind: str, path: Path, cid: str) -> Any:
    if kind in ARRAY_TYPES:
        arr = node[()]
        stored = node.attrs.get("np_dtype")
        if stored is not None and np.dtype(_attr_str(stored)) != arr.dtype:
            arr = arr.astype(np.dtype(_attr_str(stored)))
        return arr
    if kind in SCALAR_TYPES and node.shape == ():
        return float(node[()])
    raise UserError(f"{path}: clip '{cid}': stored as hickle type '{kind}', expected an array (T, D) or a NaN "
                    "scalar for a missing clip")


def _read_with_hickle(path: Path, ids: list[str]) -> dict[str, Any]:
    import hickle

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = hickle.load(str(path))
        except Exception as err:  # noqa: BLE001 - any failure of the reference reader is a bad input file
            raise UserError(f"{path}: cannot be read with hickle ({type(err).__name__}: {_one_line(err)})") from None
    recovered = [w for w in caught if "recover" in type(w.message).__name__.lower() or "recover" in str(w.message)]
    if recovered:
        raise UserError(f"{path}: hickle {getattr(hickle, '__version__', '?')} could only partly decode this file "
                        f"({_one_line(recovered[0].message)})")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a hickled dict clip_id -> array, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise UserError(f"{path}: expected str clip ids as keys, found {type(bad[0]).__name__} key {bad[0]!r}")
    out = {}
    for cid in ids:
        if cid not in data:
            continue
        value = data[cid]
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
            out[cid] = value
        elif isinstance(value, (float, int, np.floating, np.integer)):
            out[cid] = float(value)
        else:
            raise UserError(f"{path}: clip '{cid}': value of type {type(value).__name__}, expected an array (T, D) "
                            "or a NaN scalar for a missing clip")
    return out


def _attr_str(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _one_line(err: Any) -> str:
    return " ".join(str(err).split())
