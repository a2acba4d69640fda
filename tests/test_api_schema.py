"""The API's schema tells the truth: schemathesis (requirements-dev.txt) generates requests from the
server's own /openapi.json and checks every answer against it, on a real server on loopback that
serves the null model (``python -m attnfast.serve --null-model 64``: the same app, batcher and
encoding, no model to train or load). Plus what the fuzzing cannot reach (413, 503), checked in the
schema itself, and the null model's own contract."""
import importlib.util
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi", reason="the server needs fastapi (requirements.txt)")
from attnfast import serve  # noqa: E402
from attnfast.serving.launcher import ServerProcess  # noqa: E402
from attnfast.serving.null_model import BANK, NullGenerator  # noqa: E402

MAX_EXAMPLES = 40          # per operation and phase: about 250 requests in all, seconds on a CPU
TIME_LIMIT_S = 240         # the whole schemathesis run, server start excluded


@pytest.fixture(scope="module")
def server():
    with ServerProcess("--null-model", "64", "--log-level", "warning", timeout=120) as process:
        yield process


def openapi(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/openapi.json", timeout=30) as reply:
        return json.loads(reply.read())


def test_schemathesis_finds_nothing(server, tmp_path, fresh_seed):
    """Every check except positive-data acceptance: a caption valid by the schema may hold no word
    the model knows, which the 422's description says."""
    pytest.importorskip("schemathesis", reason="schemathesis comes from requirements-dev.txt (make test)")
    command = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
               "run", f"{server.url}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
               "--max-examples", str(MAX_EXAMPLES), "--seed", str(fresh_seed), "--workers", "1", "--no-color",
               "--generation-database", "none", "--request-timeout", "30"]
    try:
        run = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True,
                             timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis ran past {TIME_LIMIT_S} s:\n{exc.stdout}")
    assert run.returncode == 0, f"schemathesis found failures:\n{run.stdout}\n{run.stderr}\n{server.log}"
    assert " passed" in run.stdout, run.stdout                       # cases ran (not all skipped)


def test_every_answer_is_documented_with_its_body_and_headers(server):
    """What fuzzing does not reach: 413 (a body over the cap), 503 with Retry-After (a full queue)."""
    schema = openapi(server.url)
    paths = schema["paths"]
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path in ("/v1/images", "/v1/interpolate"):
        responses = paths[path]["post"]["responses"]
        assert set(responses) == {"200", "400", "413", "422", "503"}, (path, set(responses))
        for status in ("400", "413", "422", "503"):
            assert responses[status]["content"]["application/json"]["schema"] == error, (path, status)
        assert "Retry-After" in responses["503"]["headers"]
        assert "may still hold no known word" in responses["422"]["description"].replace("\n", " ")
        assert "$ref" in responses["200"]["content"]["application/json"]["schema"]
    assert set(paths["/v1/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(paths["/"]["get"]["responses"]["200"]["content"]) == {"text/html"}
    assert set(paths["/v1/health"]["get"]["responses"]["200"]["content"]) == {"application/json"}
    body = schema["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"error", "field"}


def test_answers_match_their_documented_content_types(server):
    for path, media in (("/v1/metrics", "text/plain"), ("/", "text/html"), ("/v1/health", "application/json")):
        with urllib.request.urlopen(f"{server.url}{path}", timeout=30) as reply:
            assert reply.headers["content-type"].split(";")[0] == media, path


# ------------------------------------------------------------------ the null model
def test_null_generator_serves_fixed_images_of_its_size():
    core = NullGenerator(32, max_batch=4)
    encoded = core.encode(["a red circle", "a blue zebra square"])
    assert encoded.unknown == [[], ["zebra"]]
    drawn = core.draw(encoded.ids, encoded.lens, [0, BANK + 1])
    assert drawn.images.shape == (2, 3, 32, 32) and drawn.images.dtype == torch.float32
    assert drawn.images.min() >= -1 and drawn.images.max() <= 1
    assert torch.equal(drawn.images[1], core.draw(encoded.ids[:1], encoded.lens[:1], [1]).images[0])
    assert drawn.last_attention.shape == (2, core.words_num, 16, 16)
    path = core.interpolate(encoded.ids, encoded.lens, 5, seed=3)
    assert path.shape == (5, 3, 32, 32) and torch.equal(path[0], core.images[3])
    with pytest.raises(ValueError, match="1..4 items"):
        core.draw(torch.zeros(5, core.words_num, dtype=torch.long), torch.ones(5, dtype=torch.long), list(range(5)))
    with pytest.raises(ValueError, match="size >= 8"):
        NullGenerator(4)


def test_serve_refuses_a_model_with_the_null_model():
    with pytest.raises(SystemExit):
        serve.build_parser().parse_args(["--null-model", "64", "--checkpoint", "x.pt"])
    assert serve.build_parser().parse_args(["--null-model", "64"]).null_model == 64


def test_torch_threads_default_to_one_off_the_cpu():
    set_torch_threads = serve.set_torch_threads
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(0, generator_on_cpu=True) == before           # torch's own default kept
        assert set_torch_threads(0, generator_on_cpu=False) == 1               # GPU or null model
        assert set_torch_threads(2, generator_on_cpu=False) == 2               # asked for
        with pytest.raises(ValueError, match="--torch-threads must be >= 0"):
            set_torch_threads(-1, generator_on_cpu=True)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ the bench
def test_serve_bench_null_model_writes_its_results(tmp_path, capsys):
    """bench/serve_bench.py --null-model at the smallest bounded size: one server, 2 clients, 0.5 s;
    the JSON holds the rows, the load averages and the GPU-host estimate."""
    path = Path(__file__).resolve().parent.parent / "bench" / "serve_bench.py"
    spec = importlib.util.spec_from_file_location("serve_bench_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--null-model", "--sizes", "64", "--ns", "16", "--formats", "raw", "--clients", "2",
                       "--seconds", "0.4", "--warmup-seconds", "0.2", "--results-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "serve_null_cpu.json").read_text())
    case, *runs = results["rows"]
    assert case["size"] == 64 and case["n"] == 16 and case["format"] == "raw" and case["errors"] == 0
    assert case["runs"] == len(runs) == 2 and all(r["requests"] > 0 and r["server_cpu_us_per_image"] > 0 for r in runs)
    meta = results["meta"]
    assert len(meta["loadavg_before"]) == 3 and len(meta["loadavg_after"]) == 3
    assert meta["summary"]["by_format"]["raw"]["host_cores_for_gpu_target"] > 0
    assert "10000 images/s need about" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--null-model", "--gpu"])
