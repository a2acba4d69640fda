"""Backend choice for every op (DESIGN.md §2).

Each op owns an :class:`OpBackends` table: backend name -> (loader, availability check). The
loader imports the implementation lazily, so a missing Triton or ``attnfast._C`` never breaks
``import attnfast``. ``backend=None`` means ``$ATTNFAST_BACKEND`` or ``"auto"``.
"""
import logging
import os
from collections.abc import Callable

import torch

LOG = logging.getLogger("attnfast")
BACKENDS = ("auto", "reference", "triton", "cuda", "cpu")
# Preference of ``auto`` per device type; the GPU order follows the benches' measurements.
AUTO_ORDER = {"cuda": ("triton", "cuda", "reference"), "cpu": ("cpu", "reference")}

_warned: set[tuple[str, str]] = set()


def default_backend() -> str:
    name = os.environ.get("ATTNFAST_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"ATTNFAST_BACKEND={name!r} is not one of {BACKENDS}")
    return name


def triton_usable(device: torch.device) -> tuple[bool, str]:
    """Triton runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1."""
    try:
        import triton  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the machine  # noqa: BLE001
        return False, f"triton is not importable ({exc})"
    if device.type == "cuda":
        return True, ""
    if os.environ.get("TRITON_INTERPRET") == "1" and device.type == "cpu":
        return True, ""
    return False, f"triton needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got {device}"


def extension_usable(device: torch.device) -> tuple[bool, str]:
    """The C++/CUDA extension ``attnfast._C``, built with CUDA for CUDA tensors."""
    try:
        from attnfast import _C  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - any failure to load the extension means it is not usable; said why
        return False, f"the extension attnfast._C is not built ({exc.__class__.__name__}: {exc})"
    if device.type == "cuda" and not getattr(_C, "WITH_CUDA", False):
        return False, "attnfast._C was built without CUDA"
    return True, ""


class OpBackends:
    """The implementations of one op, keyed by backend name."""

    def __init__(self, op_name: str):
        self.op_name = op_name
        self._table: dict[str, tuple[Callable[[], Callable], Callable[[torch.device], tuple[bool, str]]]] = {}
        self._loaded: dict[str, Callable] = {}
        self._accepts: dict[str, Callable[..., str | None] | None] = {}

    def register(self, backend: str, loader: Callable[[], Callable],
                 available: Callable[[torch.device], tuple[bool, str]] = lambda d: (True, ""),
                 accepts: Callable[..., str | None] | None = None):
        """``available(device) -> (ok, why)`` says whether the backend runs on a device at all;
        ``accepts(*inputs) -> None | why`` whether it takes these particular inputs (dtype, sizes):
        ``auto`` passes over a backend that refuses them, an explicit request raises ``why``."""
        if backend not in BACKENDS or backend == "auto":
            raise ValueError(f"unknown backend {backend!r}")
        self._table[backend] = (loader, available)
        self._accepts[backend] = accepts
        self._loaded.pop(backend, None)

    def names(self) -> list[str]:
        return list(self._table)

    def _load(self, backend: str) -> Callable:
        if backend not in self._loaded:
            self._loaded[backend] = self._table[backend][0]()
        return self._loaded[backend]

    def _check(self, backend: str, device: torch.device, inputs: tuple) -> tuple[bool, str]:
        if backend not in self._table:
            return False, f"{self.op_name} has no {backend!r} implementation (it has {self.names()})"
        ok, why = self._table[backend][1](device)
        if not ok:
            return False, why
        try:
            self._load(backend)
        except Exception as exc:  # noqa: BLE001 - a backend that fails to load is reported as unusable, with the error
            return False, f"loading the {backend} implementation failed ({exc})"
        accepts = self._accepts.get(backend)
        refusal = accepts(*inputs) if accepts is not None and inputs else None
        return (False, refusal) if refusal else (True, "")

    def pick(self, backend: str | None, device: torch.device, inputs: tuple = ()) -> tuple[str, Callable]:
        """The implementation to run for ``inputs`` on ``device``: (name, function)."""
        requested = default_backend() if backend is None else backend
        if requested not in BACKENDS:
            raise ValueError(f"{self.op_name}: backend must be one of {BACKENDS}, got {requested!r}")
        if requested != "auto":
            ok, why = self._check(requested, device, inputs)
            if not ok:
                raise RuntimeError(f"{self.op_name}: backend {requested!r} cannot run here: {why}")
            return requested, self._load(requested)
        reasons = []
        for name in AUTO_ORDER.get(device.type, ("reference",)):
            if name not in self._table:
                continue
            ok, why = self._check(name, device, inputs)
            if ok:
                if reasons and (self.op_name, device.type) not in _warned:
                    _warned.add((self.op_name, device.type))
                    LOG.warning("attnfast: %s on %s uses the %s backend (%s)", self.op_name,
                                device.type, name, "; ".join(reasons))
                return name, self._load(name)
            reasons.append(f"{name}: {why}")
        raise RuntimeError(f"{self.op_name}: no backend can run on {device}: {'; '.join(reasons)}")
