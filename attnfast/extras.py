"""Optional parts of attnfast and how to get them.

``pip install attnfast`` brings the library, training, sampling and evaluation without IS/FID; the
extras add the rest (setup.py ``extras_require``):

- ``serve``: fastapi, uvicorn, prometheus_client (``python -m attnfast.serve``);
- ``metrics``: torchmetrics (IS and FID in ``python -m attnfast.eval``);
- ``triton``: triton (the Triton kernels; without it the extension or the reference backend runs).

An entry point whose extra is missing ends in one line, ``PROG: error: ... needs the package
'uvicorn', which is not installed: pip install 'attnfast[serve]'``, and exit status 2
(:func:`run_cli`), never in a traceback.
"""
import importlib.util
import sys
from collections.abc import Callable

# importable top-level module -> (the extra of attnfast that brings it, what needs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "fastapi": ("serve", "the HTTP service"),
    "starlette": ("serve", "the HTTP service"),
    "uvicorn": ("serve", "the HTTP service"),
    "prometheus_client": ("serve", "the HTTP service's /metrics"),
    "torchmetrics": ("metrics", "IS and FID"),
    "triton": ("triton", "the Triton kernels"),
}


class MissingExtra(ImportError):
    """An optional package that an entry point needs is not installed; the message names it and
    the pip command that installs it."""

    def __init__(self, module: str):
        top = module.split(".")[0]
        extra, purpose = EXTRAS[top]
        self.module, self.extra = top, extra
        self.install = f"pip install 'attnfast[{extra}]'"
        super().__init__(f"{purpose} needs the package '{top}', which is not installed: {self.install}",
                         name=top)


def is_installed(module: str) -> bool:
    """Whether the top-level ``module`` can be imported here (found without importing it)."""
    return importlib.util.find_spec(module.split(".")[0]) is not None


def require_extra(extra: str) -> None:
    """Raise :class:`MissingExtra` for the first module of ``extra`` (a key of setup.py's
    extras_require, e.g. "serve") that is not installed."""
    modules = [module for module, (name, _) in EXTRAS.items() if name == extra]
    if not modules:
        raise ValueError(f"unknown extra {extra!r}; known: {sorted({name for name, _ in EXTRAS.values()})}")
    for module in modules:
        if not is_installed(module):
            raise MissingExtra(module)


def as_missing_extra(exc: BaseException) -> MissingExtra | None:
    """``exc`` as a :class:`MissingExtra` when it is one, or a ModuleNotFoundError of a module of
    an extra; None otherwise (a genuine bug keeps its traceback)."""
    if isinstance(exc, MissingExtra):
        return exc
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] in EXTRAS:
        return MissingExtra(exc.name)
    return None


def run_cli(prog: str, main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """``main(argv)``'s exit status; a missing extra prints one line to stderr and returns 2."""
    try:
        return main(argv)
    except ImportError as exc:
        missing = as_missing_extra(exc)
        if missing is None:
            raise
        print(f"{prog}: error: {missing}", file=sys.stderr)
        return 2
