"""Mutation check (issue 30, ``make mutate``): single-site bugs in attnfast/reference/, attnfast/ops/,
the models' wiring and the loss code, each run against the tests that cover its file; a mutant is
killed when those tests fail. Not part of ``make test`` (it runs pytest once per mutant: about 10 to
30 minutes on 2 CPU cores).

    python bench/mutate.py                 # every mutant; summary and bench/results/mutate.json
    python bench/mutate.py --list          # the mutants
    python bench/mutate.py --only ID ...   # some of them
    python bench/mutate.py --extension     # also the C++ extension's mutants (a build each, minutes)

Each Python mutant replaces one exact piece of source text (it must occur once) and the file is
restored afterwards, whatever happens (the working tree is left as it was). A C++ mutant (path under
csrc/) is built out of tree: csrc/ copied to a temporary folder, the change applied there, the CPU
sources compiled with torch.utils.cpp_extension.load and installed as ``attnfast._C`` for the tests
(the checkout's own build is not touched).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "mutate.json"


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str          # relative to the repository root
    old: str           # exact source text, once in the file
    new: str
    tests: tuple       # the test files run against it


GUARDS = "tests/test_mutation_guards.py"
MUTANTS = (
    Mutant("gen-next-stage-cat-order", "attnfast/models/generator.py",
           "h_c_code = torch.cat((h_code, c_code), 1)", "h_c_code = torch.cat((c_code, h_code), 1)",
           (GUARDS, "tests/test_models.py")),
    Mutant("gen-init-stage-cat-order", "attnfast/models/generator.py",
           "c_z_code = torch.cat((c_code, z_code), 1)", "c_z_code = torch.cat((z_code, c_code), 1)",
           (GUARDS, "tests/test_models.py")),
    Mutant("disc-cond-cat-order", "attnfast/models/discriminator.py",
           "h_c_code = torch.cat((h_code, c_code), 1)", "h_c_code = torch.cat((c_code, h_code), 1)",
           (GUARDS, "tests/test_models.py")),
    Mutant("lambda-not-on-sentence-loss", "attnfast/trainer/gan.py",
           '"s_loss": (s0 + s1) * gan["lambda"]', '"s_loss": (s0 + s1)', (GUARDS,)),
    Mutant("lambda-not-on-word-loss", "attnfast/trainer/gan.py",
           '"w_loss": (w0 + w1) * gan["lambda"]', '"w_loss": (w0 + w1)', (GUARDS,)),
    Mutant("kl-left-out-of-g-loss", "attnfast/trainer/gan.py",
           'errG = errG + losses["w_loss"] + losses["s_loss"] + kl', 'errG = errG + losses["w_loss"] + losses["s_loss"]',
           (GUARDS,)),
    Mutant("ema-decay-0.99", "attnfast/config.py", '"ema": 0.999,', '"ema": 0.99,', (GUARDS,)),
    Mutant("ema-warm-up-constant", "attnfast/trainer/gan.py",
           "(1.0 + self.updates) / (10.0 + self.updates)", "(1.0 + self.updates) / (5.0 + self.updates)", (GUARDS,)),
    Mutant("kl-sign", "attnfast/reference/conditioning.py",
           "return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())",
           "return -0.5 * torch.mean(1 + logvar + mu.pow(2) - logvar.exp())",
           ("tests/test_reference.py", "tests/test_models.py")),
    Mutant("glu-halves-swapped", "attnfast/reference/blocks.py",
           "return x[:, :half] * torch.sigmoid(x[:, half:])", "return x[:, half:] * torch.sigmoid(x[:, :half])",
           ("tests/test_reference.py", "tests/test_blocks.py")),
    Mutant("d-loss-wrong-caption-weight", "attnfast/reference/gan_losses.py",
           "return cond_real + (cond_fake + cond_wrong) / 2.0", "return cond_real + (cond_fake + cond_wrong) / 3.0",
           ("tests/test_reference.py", "tests/test_gan_options.py")),
    Mutant("g-adv-loss-target", "attnfast/reference/gan_losses.py",
           "    loss = _bce(fake_cond, 1.0)\n", "    loss = _bce(fake_cond, 0.0)\n",
           ("tests/test_reference.py", "tests/test_gan_options.py")),
    Mutant("damsm-logsumexp-gamma", "attnfast/reference/damsm.py",
           "scores = torch.logsumexp((gamma2 * cosine)", "scores = torch.logsumexp((gamma1 * cosine)",
           ("tests/test_reference.py", "tests/test_ops.py")),
    Mutant("damsm-class-mask-dropped", "attnfast/reference/damsm.py",
           "        scores = scores.masked_fill(masks, -float(\"inf\"))\n", "        scores = scores\n",
           ("tests/test_reference.py", "tests/test_ops.py")),
    Mutant("masked-softmax-mask-dropped", "attnfast/reference/_common.py",
           "        scores = scores.masked_fill(mask, float(\"-inf\"))\n", "        scores = scores\n",
           ("tests/test_reference.py", "tests/test_ops.py")),
    Mutant("ops-damsm-gammas-swapped", "attnfast/ops/damsm.py",
           "return impl(regions, words, lens, float(gamma1), float(gamma2), return_attn=return_attn)",
           "return impl(regions, words, lens, float(gamma2), float(gamma1), return_attn=return_attn)",
           ("tests/test_ops.py", "tests/test_damsm_zero_vectors.py")),
)
# the C++ extension (built out of tree, --extension only)
EXTENSION_MUTANTS = (
    Mutant("cpp-damsm-zero-norm-branch", "csrc/damsm_cpu.cpp",
           "alpha[task] = g / kCosineEps;", "alpha[task] = 0.0f;",
           ("tests/test_damsm_zero_vectors.py",)),
)

# runs in a subprocess: build csrc/ from argv[1] as a module, install it as attnfast._C, run pytest
_WITH_BUILT_EXTENSION = textwrap.dedent("""
    import glob, sys
    from torch.utils import cpp_extension
    source, build = sys.argv[1], sys.argv[2]
    module = cpp_extension.load(name="attnfast_C_mutant", sources=sorted(glob.glob(source + "/*.cpp")),
                                extra_include_paths=[source], extra_cflags=["-O1", "-g0", "-fopenmp"],
                                extra_ldflags=["-fopenmp"], build_directory=build, verbose=False)
    sys.modules["attnfast._C"] = module
    import attnfast
    attnfast._C = module
    import pytest
    sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", *sys.argv[3:]]))
""")


def _pytest(command: list[str], timeout: float) -> tuple[str, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
                                check=False)
    except subprocess.TimeoutExpired:
        return "timed out (counted killed)", ""
    status = "survived" if result.returncode == 0 else (
        "killed" if result.returncode == 1 else f"error (exit {result.returncode})")
    lines = result.stdout.strip().splitlines()
    return status, lines[-1] if lines else result.stderr.strip()[-300:]


def run_mutant(mutant: Mutant, timeout: float) -> dict:
    path = ROOT / mutant.path
    original = path.read_bytes()
    text = original.decode()
    count = text.count(mutant.old)
    if count != 1:
        return {"id": mutant.id, "status": f"not applied: the text occurs {count} times in {mutant.path}"}
    started = time.monotonic()
    if mutant.path.startswith("csrc/"):
        with tempfile.TemporaryDirectory(prefix="attnfast-mutant-") as tmp:
            source, build = Path(tmp) / "csrc", Path(tmp) / "build"
            shutil.copytree(ROOT / "csrc", source)
            build.mkdir()
            (source / path.name).write_text(text.replace(mutant.old, mutant.new))
            status, tail = _pytest([sys.executable, "-c", _WITH_BUILT_EXTENSION, str(source), str(build),
                                    *mutant.tests], timeout)
    else:
        try:
            path.write_text(text.replace(mutant.old, mutant.new))
            status, tail = _pytest([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                    *mutant.tests], timeout)
        finally:
            path.write_bytes(original)
    return {"id": mutant.id, "file": mutant.path, "tests": list(mutant.tests), "status": status,
            "seconds": round(time.monotonic() - started, 1), "pytest": tail}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants only")
    parser.add_argument("--extension", action="store_true",
                        help="also the C++ extension's mutants (each an out-of-tree build: minutes)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant (default 900)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON summary (default {RESULTS})")
    args = parser.parse_args(argv)
    mutants = MUTANTS + (EXTENSION_MUTANTS if args.extension or args.list else ())
    if args.list:
        for m in mutants:
            print(f"{m.id:32s} {m.path}  ({', '.join(m.tests)})")
        return 0
    chosen = [m for m in mutants if not args.only or m.id in args.only]
    unknown = set(args.only or ()) - {m.id for m in mutants}
    if unknown:
        print(f"mutate: unknown mutants {sorted(unknown)}; see --list", file=sys.stderr)
        return 2
    rows = []
    for mutant in chosen:
        row = run_mutant(mutant, args.timeout)
        rows.append(row)
        print(f"{row['status']:28s} {mutant.id} ({row.get('seconds', 0)} s) {row.get('pytest', '')}", flush=True)
    killed = sum(r["status"].startswith(("killed", "timed out")) for r in rows)
    applied = sum(not r["status"].startswith("not applied") for r in rows)
    summary = {"killed": killed, "mutants": applied, "score": round(killed / max(applied, 1), 3),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"mutation score: {killed} of {applied} killed -> {args.out}")
    return 0 if killed == applied else 1


if __name__ == "__main__":
    sys.exit(main())
