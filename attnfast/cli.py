"""``attnfast``: one front door to every tool. ``attnfast COMMAND ARGS...`` is the same as
``python -m attnfast.COMMAND ARGS...`` (it calls that module's ``main(ARGS)``); ``attnfast bench
NAME ARGS...`` is ``python bench/NAME_bench.py ARGS...`` of the source checkout.
"""
import argparse
import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

from attnfast import __version__
from attnfast.extras import run_cli

# command -> (module whose main(argv) it runs, one line for the help). "bench" has no module: it
# runs the scripts of the checkout's bench/ folder.
COMMANDS = {
    "train": ("attnfast.train", "the whole training pipeline (DAMSM, GAN, shapes evaluation) into --out, or one --stage"),
    "sample": ("attnfast.sample", "draw images and attention maps from a GAN checkpoint or released weights"),
    "eval": ("attnfast.eval", "metrics: shapes accuracy, pointing game, R-precision, IS/FID, VLMS"),
    "serve": ("attnfast.serve", "HTTP API and web page over a GAN checkpoint, with dynamic batching"),
    "demo": ("attnfast.demo", "the main job end to end on the shapes dataset, sized for a CPU (make demo)"),
    "bench": (None, "the benchmarks of bench/: 'attnfast bench' lists them, 'attnfast bench NAME [--quick]' runs one"),
}
BENCH_SUFFIX = "_bench.py"


def installed(module: str) -> bool:
    """Whether ``module`` exists in this installation (found without importing it)."""
    return importlib.util.find_spec(module) is not None


def _command_lines() -> str:
    width = max(map(len, COMMANDS))
    lines = []
    for name, (module, summary) in COMMANDS.items():
        missing = module is not None and not installed(module)
        lines.append(f"  {name:<{width}}  {summary}" + (" (not installed in this version)" if missing else ""))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnfast", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="attnfast [-h] [--version] COMMAND [ARGS ...]",
        description=f"attnfast {__version__}: AttnGAN and DAMSM as a performance engine.\n"
                    "'attnfast COMMAND ARGS' is the same as 'python -m attnfast.COMMAND ARGS'.",
        epilog=f"commands:\n{_command_lines()}\n\n'attnfast COMMAND --help' shows a command's options.")
    parser.add_argument("--version", action="version", version=f"attnfast {__version__}")
    parser.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="COMMAND", help=argparse.SUPPRESS)
    return parser


# ------------------------------------------------------------------ bench
class BenchUnavailable(RuntimeError):
    """The bench/ folder of a source checkout is not there (e.g. an installed wheel)."""


def bench_dir() -> Path:
    """The source checkout's bench/ folder (beside the attnfast package of an editable install)."""
    folder = Path(__file__).resolve().parent.parent / "bench"
    if not any(folder.glob(f"*{BENCH_SUFFIX}")):
        raise BenchUnavailable(f"no benchmarks at {folder}: they live in the bench/ folder of the source "
                               "checkout, which this installation of attnfast does not have. Clone the "
                               "repository and install it with 'pip install -e .' to run them.")
    return folder


def benches() -> dict[str, Path]:
    """Benchmark name (``attention`` for bench/attention_bench.py) -> script."""
    return {path.name[:-len(BENCH_SUFFIX)]: path for path in sorted(bench_dir().glob(f"*{BENCH_SUFFIX}"))}


def _bench_listing(scripts: dict[str, Path]) -> str:
    width = max(map(len, scripts))
    lines = [("usage: attnfast bench NAME [ARGS ...]   (= python bench/NAME_bench.py ARGS; "
             "'attnfast bench NAME --help' shows its options)"), "", "benchmarks:"]
    for name, path in scripts.items():
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        lines.append(f"  {name:<{width}}  {doc.splitlines()[0] if doc else ''}")
    return "\n".join(lines)


def run_bench(argv: list[str]) -> int:
    """``attnfast bench [NAME [ARGS...]]``: list the benchmarks, or run one in a child Python."""
    try:
        scripts = benches()
    except BenchUnavailable as exc:
        print(f"attnfast bench: error: {exc}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help"):
        print(_bench_listing(scripts))
        return 0
    name = argv[0].removesuffix(".py").removesuffix("_bench")
    if name not in scripts:
        print(f"attnfast bench: error: no benchmark {argv[0]!r}; the benchmarks are: {', '.join(scripts)}",
              file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(scripts[name]), *argv[1:]])


# ------------------------------------------------------------------ dispatch
def run_command(command: str, argv: list[str]) -> int:
    """Run ``command`` (a key of :data:`COMMANDS`) with its arguments ``argv``; its exit status."""
    module_name, _ = COMMANDS[command]
    if module_name is None:
        return run_bench(argv)
    if not installed(module_name):
        print(f"attnfast {command}: error: '{command}' is not installed in this version of attnfast "
              f"{__version__} (there is no module {module_name})", file=sys.stderr)
        return 2
    return run_cli(f"attnfast {command}", lambda args: importlib.import_module(module_name).main(args), argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv[:1])  # the rest belongs to the command
    if args.command is None:
        parser.print_help()
        return 0
    return run_command(args.command, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
