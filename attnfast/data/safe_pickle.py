"""A restricted unpickler for the AttnGAN metadata pickles (``filenames.pickle``,
``captions.pickle``, ``class_info.pickle``).

Those files hold only builtin containers and scalars (lists, dicts, ints, strings), so
:func:`load_pickle` admits no global at all besides the harmless container/scalar types a Python 2
pickle may name (``__builtin__.set``, ``collections.defaultdict``, ...) and the
``_codecs.encode(text, "latin1")`` by which Python 3 writes ``bytes`` in protocol 2. Any other global (the
``os.system`` of a malicious file, ``copy_reg._reconstructor`` of a pickled object) is refused with
:class:`UnsafePickleError` naming the file and the global. With ``allow_numpy=True`` numpy arrays
are admitted too (their reconstruction is a dtype and a byte buffer, nothing executable).

The released pickles were written by Python 2: they are read with ``encoding="latin1"`` (Python 2
``str`` -> ``str``) and any ``bytes`` left (keys or values) are decoded to ``str`` (UTF-8, else
Latin-1), so they load under Python 3 without the usual ``UnicodeDecodeError``.
"""
from __future__ import annotations

import collections
import importlib
import io
import pickle
from pathlib import Path

import numpy as np

__all__ = ["RestrictedUnpickler", "UnsafePickleError", "load_pickle", "loads_restricted"]

# Harmless callables: builtin container/scalar constructors (Python 2 and 3 module names).
_BUILTIN_TYPES = {"set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple,
                  "int": int, "long": int, "float": float, "bool": bool, "complex": complex,
                  "str": str, "unicode": str, "bytes": bytes, "bytearray": bytearray}
_ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
            ("collections", "defaultdict"): collections.defaultdict}
for _module in ("builtins", "__builtin__"):
    for _name, _obj in _BUILTIN_TYPES.items():
        _ALLOWED[(_module, _name)] = _obj


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 writes ``bytes`` in protocol 2 as ``_codecs.encode(text, "latin1")``: only that."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} refused")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _latin1_encode

_NUMPY_NAMES = {"_reconstruct", "scalar"}


def _numpy_global(module: str, name: str):
    """numpy's array/scalar reconstruction globals (``numpy.core`` or ``numpy._core``), or None."""
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in _NUMPY_NAMES:
        try:
            multiarray = importlib.import_module("numpy._core.multiarray")  # numpy >= 2
        except ImportError:
            multiarray = importlib.import_module("numpy.core.multiarray")
        return getattr(multiarray, name)
    return None


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (it could run code when loaded)."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose :meth:`find_class` admits only the allow-list above.

    ``source`` names the file in error messages.
    """

    def __init__(self, file, *, source: str = "<pickle>", allow_numpy: bool = False):
        super().__init__(file, encoding="latin1", fix_imports=True)
        self.source = source
        self.allow_numpy = allow_numpy

    def find_class(self, module: str, name: str):
        obj = _ALLOWED.get((module, name))
        if obj is None and self.allow_numpy:
            obj = _numpy_global(module, name)
        if obj is None:
            raise UnsafePickleError(
                f"{self.source}: refused to load the global '{module}.{name}' (only builtin "
                f"containers and scalars are allowed in AttnGAN's metadata pickles)")
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refused a persistent id {pid!r}")


def _decode(obj):
    """Recursively turn ``bytes`` (keys and values) into ``str``; containers are rebuilt."""
    if isinstance(obj, (bytes, bytearray)):
        try:
            return bytes(obj).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(obj).decode("latin1")
    if isinstance(obj, list):
        return [_decode(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_decode(x) for x in obj)
    if isinstance(obj, (set, frozenset)):
        return type(obj)(_decode(x) for x in obj)
    if isinstance(obj, dict):
        out = {_decode(k): _decode(v) for k, v in obj.items()}
        if type(obj) is not dict:  # OrderedDict / defaultdict keep their type
            rebuilt = obj.copy()
            rebuilt.clear()
            rebuilt.update(out)
            return rebuilt
        return out
    if isinstance(obj, np.ndarray) and obj.dtype.kind in ("S", "O"):
        return np.array([_decode(x) for x in obj.ravel().tolist()], dtype=object).reshape(obj.shape)
    return obj


def loads_restricted(data: bytes, *, source: str = "<pickle>", allow_numpy: bool = False):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`, bytes decoded to str."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source=source, allow_numpy=allow_numpy).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise pickle.UnpicklingError(
            f"{source}: not a readable pickle ({exc.__class__.__name__}: {exc})") from exc
    return _decode(obj)


def load_pickle(path: str | Path, *, allow_numpy: bool = False):
    """Load ``path`` with the restricted unpickler (Python 2 pickles included).

    Raises ``FileNotFoundError`` naming the path when it is missing, :class:`UnsafePickleError`
    (naming the file and the global) for a disallowed global, ``pickle.UnpicklingError`` naming the
    file when it is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle not found: {path}")
    return loads_restricted(path.read_bytes(), source=str(path), allow_numpy=allow_numpy)
