"""The ``attnfast`` front door: the installed console script, ``python -m attnfast``, every
subcommand's --help (the same as its ``python -m`` form), --version, bench and serve."""
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import attnfast
from attnfast import cli

ROOT = Path(__file__).resolve().parent.parent
MODULE_COMMANDS = [name for name, (module, _) in cli.COMMANDS.items() if module is not None]


def _console_script() -> str:
    """The ``attnfast`` script that ``pip install -e .`` put beside this interpreter."""
    script = shutil.which("attnfast", path=str(Path(sys.executable).parent))
    assert script is not None, f"no attnfast console script in {Path(sys.executable).parent}: reinstall (make install)"
    return script


def test_console_script_and_python_m_print_the_same_help_listing_every_command():
    script = subprocess.run([_console_script(), "--help"], capture_output=True, text=True, timeout=120, check=False)
    module = subprocess.run([sys.executable, "-m", "attnfast"], capture_output=True, text=True, timeout=120, check=False)
    assert script.returncode == module.returncode == 0, script.stderr + module.stderr
    assert script.stdout == module.stdout
    listed = [line.split()[0] for line in script.stdout.split("commands:\n")[1].split("\n\n")[0].splitlines()]
    assert listed == ["train", "sample", "eval", "serve", "demo", "bench"]


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"attnfast {attnfast.__version__}"
    assert importlib.metadata.version("attnfast") == attnfast.__version__  # setup.py reads it from there
    result = subprocess.run([_console_script(), "--version"], capture_output=True, text=True, timeout=120, check=False)
    assert result.stdout.strip() == f"attnfast {attnfast.__version__}"


@pytest.mark.parametrize("command", MODULE_COMMANDS)
def test_every_subcommand_help_is_its_python_m_help(command, capsys):
    module = cli.COMMANDS[command][0]
    if not cli.installed(module):
        pytest.skip(f"{module} is not in this version (its command says so: see the next test)")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    ours = capsys.readouterr().out
    with pytest.raises(SystemExit):
        __import__(module, fromlist=["main"]).main(["--help"])
    assert ours.startswith("usage:") and ours == capsys.readouterr().out


def test_a_command_not_installed_says_so(capsys, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "serve", ("attnfast.no_such_server", "HTTP API"))
    assert cli.main(["serve", "--port", "8000"]) == 2
    assert "'serve' is not installed in this version of attnfast" in capsys.readouterr().err
    assert cli.main([]) == 0  # no command: the help
    assert "(not installed in this version)" in capsys.readouterr().out


def test_unknown_command_is_refused_with_the_list(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["trian"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_bench_lists_and_runs_the_checkout_scripts(capfd):
    scripts = sorted(p.name.removesuffix("_bench.py") for p in (ROOT / "bench").glob("*_bench.py"))
    assert cli.main(["bench"]) == 0
    listing = capfd.readouterr().out
    assert [line.split()[0] for line in listing.split("benchmarks:\n")[1].splitlines()] == scripts
    assert cli.main(["bench", "attention", "--help"]) == 0  # = python bench/attention_bench.py --help
    assert "--quick" in capfd.readouterr().out
    assert cli.main(["bench", "nope"]) == 2
    assert f"no benchmark 'nope'; the benchmarks are: {', '.join(scripts)}" in capfd.readouterr().err


def test_bench_without_a_source_checkout_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "attnfast" / "cli.py"))
    assert cli.main(["bench", "attention"]) == 2
    err = capsys.readouterr().err
    assert f"no benchmarks at {tmp_path / 'site-packages' / 'bench'}" in err and "pip install -e ." in err
