"""The package's structure (issue 30): the inference path never imports the trainer, no import
circle, attnfast imports at module top (except the command-line entry points and the optional
dependencies), the Triton kernels import only the reference. import-linter checks the layer
contracts of pyproject.toml in `make test` (`make lint`); these tests need only the standard library
and the package."""
import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_train import damsm_checkpoint, gan_checkpoint  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "attnfast"
# command-line entry points: a lazy import keeps --help fast
CLIS = {"attnfast.train", "attnfast.sample", "attnfast.eval", "attnfast.serve", "attnfast.demo", "attnfast.cli",
        "attnfast.__main__"}
# attnfast modules that need an optional dependency: the extension, triton (kernels and the custom
# ops over them), fastapi/uvicorn (serving)
OPTIONAL = ("attnfast._C", "attnfast.kernels", "attnfast.ops._extension", "attnfast.ops._attention_custom_op",
            "attnfast.ops._damsm_custom_op", "attnfast.serving")


def _module_name(path: Path, root: Path = PACKAGE, package: str = "attnfast") -> str:
    parts = path.relative_to(root).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((package, *parts))


def _modules(root: Path = PACKAGE, package: str = "attnfast") -> dict[str, Path]:
    return {_module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}


def _imported(module: str, path: Path, node, known) -> list[str]:
    """The attnfast modules an import statement names (``from pkg import sub`` names pkg.sub when it
    is a module, else pkg)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("attnfast")]
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("attnfast"):
        return []
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]


def _visit(node, in_function: bool, module: str, path: Path, modules, out: list) -> None:
    for child in ast.iter_child_nodes(node):
        inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for target in _imported(module, path, child, modules):
                out.append((module, child.lineno, target, in_function))
        _visit(child, inner, module, path, modules, out)


def _known() -> set[str]:
    """Every attnfast module: the package's files, the kernels (kernels/, mapped by setup.py) and the
    compiled extension."""
    return set(_modules()) | set(_modules(ROOT / "kernels", "attnfast.kernels")) | {"attnfast._C"}


def _imports(modules: dict[str, Path]):
    """(module, line, imported module, inside a function) for every attnfast import."""
    out, known = [], _known()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        _visit(tree, False, module, path, known, out)
    return out


def _optional(target: str) -> bool:
    return any(target == o or target.startswith(o + ".") for o in OPTIONAL)


def test_attnfast_imports_are_at_module_top_outside_clis_and_optional_dependencies():
    lazy = [f"{module}:{line} imports {target} inside a function"
            for module, line, target, in_function in _imports(_modules())
            if in_function and module not in CLIS and not _optional(target)]
    assert not lazy, "\n".join(lazy)


def test_no_import_circle_in_the_package():
    modules = _modules()
    graph = {m: set() for m in modules}
    for module, _, target, _ in _imports(modules):
        if target in graph and target != module:
            graph[module].add(target)
    # a package's __init__ re-exporting its submodules is not a circle with them: a submodule
    # importing its own package's __init__ is (it runs before the package finished importing)
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def strongconnect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    assert not circles, circles


def test_the_triton_kernels_import_only_the_reference():
    """attnfast.kernels (kernels/ in the checkout, mapped by setup.py) sits between ops and the
    reference; import-linter cannot see it (it is outside attnfast/), so this checks its layer."""
    kernels = _modules(ROOT / "kernels", "attnfast.kernels")
    wrong = [f"{m}:{line} imports {t}" for m, line, t, _ in _imports(kernels)
             if not (t.startswith(("attnfast.reference", "attnfast.kernels")))]
    assert not wrong, wrong


INFERENCE = textwrap.dedent("""
    import json, sys
    import torch
    from attnfast.generation import SeededGenerator, load_generator
    from attnfast.generation.batch_files import sample_to_files
    models = load_generator(sys.argv[1], torch.device("cpu"))
    core = SeededGenerator(models, torch.device("cpu"), max_batch=4)
    ids, lens, _, _ = core.encode(["a large red circle in the center"])
    drawn = core.draw(ids, lens, seeds=[7])
    assert drawn.images.shape[0] == 1 and drawn.last_attention is not None
    sample_to_files(sys.argv[1], ["a small blue square"], sys.argv[2], n=1, attention=True,
                    device=torch.device("cpu"), progress=False)
    served = None
    try:
        from fastapi.testclient import TestClient
    except ImportError:
        pass
    else:
        from attnfast.serving import ServeSettings, create_app
        with TestClient(create_app(core, ServeSettings(max_batch=4))) as client:
            reply = client.post("/v1/images", json={"captions": ["a large red circle in the center"], "seed": 3})
            served = reply.status_code
    print(json.dumps({"served": served, "trainer": sorted(m for m in sys.modules
                                                          if m.startswith(("attnfast.trainer", "attnfast.pipeline")))}))
""")


def test_inference_and_serving_never_load_the_trainer(gan_checkpoint, tmp_path):
    result = subprocess.run([sys.executable, "-c", INFERENCE, str(gan_checkpoint), str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["trainer"] == [], report
    assert report["served"] in (200, None), report
    assert list((tmp_path / "out").glob("*_attention.png")), "no attention map was written"


# ------------------------------------------------------------------ optional parts (issue 30, 5)
HIDE = textwrap.dedent("""
    import importlib.abc, runpy, sys
    HIDDEN = set(sys.argv[1].split(","))
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    for name in list(sys.modules):
        if name.split(".")[0] in HIDDEN:
            del sys.modules[name]
    sys.meta_path.insert(0, Hide())
    import importlib.util
    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in HIDDEN else _find_spec(name, *a)
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
""")


def _run_hidden(hidden: str, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE, hidden, module, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False)


@pytest.mark.parametrize("hidden,module,args,package,extra", [
    ("uvicorn", "attnfast.serve", ["--help"], "uvicorn", "serve"),
    ("fastapi", "attnfast.serve", ["--checkpoint", "x.pt"], "fastapi", "serve"),
    ("prometheus_client", "attnfast.serve", ["--help"], "prometheus_client", "serve"),
    ("uvicorn", "attnfast", ["serve", "--help"], "uvicorn", "serve"),
    ("torchmetrics", "attnfast.eval", ["--is", "--samples", "nowhere"], "torchmetrics", "metrics"),
    ("torchmetrics", "attnfast", ["eval", "--fid", "--samples", "nowhere"], "torchmetrics", "metrics"),
])
def test_a_missing_extra_ends_in_one_line_naming_it_and_the_install_command(hidden, module, args, package,
                                                                           extra):
    result = _run_hidden(hidden, module, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"'{package}'" in lines[0] and f"pip install 'attnfast[{extra}]'" in lines[0], lines[0]


def test_the_command_line_help_works_without_any_extra():
    result = _run_hidden("uvicorn,fastapi,starlette,prometheus_client,torchmetrics,triton", "attnfast", "--help")
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "Traceback" not in result.stderr


def test_missing_extra_errors_name_the_package_and_command():
    from attnfast.extras import MissingExtra, as_missing_extra, require_extra
    error = MissingExtra("uvicorn.config")
    assert error.module == "uvicorn" and error.install == "pip install 'attnfast[serve]'"
    assert as_missing_extra(ModuleNotFoundError("x", name="torchmetrics.image")).extra == "metrics"
    assert as_missing_extra(ModuleNotFoundError("x", name="numpy")) is None  # a real bug keeps its traceback
    with pytest.raises(ValueError, match="unknown extra"):
        require_extra("nope")
    require_extra("serve")  # installed here (requirements.txt)
