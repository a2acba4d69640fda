"""``python -m attnfast.serve``: the API in-process (every endpoint and error, batching determinism,
queue overflow, metrics), a fuzz of malformed requests, and a real server subprocess drained by
SIGTERM. The browser test is tests/test_serve_browser.py."""
import base64
import io
import json
import random
import signal
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

fastapi = pytest.importorskip("fastapi", reason="the server needs fastapi (requirements.txt)")
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from test_train import damsm_checkpoint, gan_checkpoint  # noqa: E402,F401 - fixtures

from attnfast import serve as serve_cli  # noqa: E402
from attnfast.data import to_uint8_images  # noqa: E402
from attnfast.generation import SeededGenerator, load_generator  # noqa: E402
from attnfast.serving import ServeSettings, create_app  # noqa: E402
from attnfast.serving.encoding import uint8_images  # noqa: E402
from attnfast.serving.launcher import ServerProcess  # noqa: E402

CPU = torch.device("cpu")
RED = "a large red circle in the center"
BLUE = "a small blue square in the top left"


@pytest.fixture(scope="module")
def core(gan_checkpoint):
    return SeededGenerator(load_generator(gan_checkpoint, CPU), CPU, max_batch=8)


def client_for(core, **limits):
    settings = ServeSettings(**{"max_batch": 8, "max_queue": 32, **limits})
    return TestClient(create_app(core, settings))


@pytest.fixture(scope="module")
def client(core):
    with client_for(core) as c:
        yield c


def pixels(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return np.asarray(image.convert("RGB") if image.mode != "L" else image).astype(int)


def metric_values(text: str) -> dict:
    """{(name, frozenset(labels)): value} of a Prometheus exposition."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# ------------------------------------------------------------------ the endpoints
def test_images_with_attention_tokens_and_unknown_words(client, core):
    reply = client.post("/v1/images", json={"captions": [RED, "a zebra blue square"], "n": 2, "seed": 7,
                                            "attention": True})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["seed"] == 7 and body["format"] == "png" and body["size"] == 128
    assert [c["unknown"] for c in body["captions"]] == [[], ["zebra"]]
    assert body["captions"][1]["tokens"] == ["a", "blue", "square"]
    assert [(i["caption"], i["seed"]) for i in body["images"]] == [(0, 7), (0, 8), (1, 9), (1, 10)]
    first = body["images"][0]
    assert pixels(first["image"]).shape == (128, 128, 3)
    assert [a["word"] for a in first["attention"]] == RED.split()
    attention = core.draw(*(t[:1] for t in core.encode([RED])[:2]), [7]).last_attention
    assert pixels(first["attention"][1]["map"]).shape == tuple(attention.shape[-2:])
    assert pixels(first["attention"][1]["overlay"]).shape == (128, 128, 3)
    assert not np.array_equal(pixels(first["image"]), pixels(body["images"][1]["image"]))


def test_a_caption_and_seed_give_the_same_image_as_the_core_and_as_jpeg(client, core):
    reply = client.post("/v1/images", json={"captions": [BLUE], "seed": 123, "format": "jpeg"})
    assert reply.status_code == 200 and reply.json()["format"] == "jpeg"
    assert base64.b64decode(reply.json()["images"][0]["image"])[:3] == b"\xff\xd8\xff"
    png = client.post("/v1/images", json={"captions": [BLUE], "seed": 123}).json()["images"][0]["image"]
    ids, lens, _, _ = core.encode([BLUE])
    from attnfast.data import to_uint8_images
    expected = to_uint8_images(core.draw(ids, lens, [123]).images)[0].astype(int)
    assert np.abs(pixels(png) - expected).max() <= 1
    assert np.abs(pixels(reply.json()["images"][0]["image"]) - expected).mean() < 8        # JPEG loss


def test_raw_format_is_the_uint8_pixels_of_the_png(client):
    body = client.post("/v1/images", json={"captions": [BLUE], "seed": 123, "format": "raw", "attention": True}).json()
    size = body["size"]
    assert body["format"] == "raw"
    raw = np.frombuffer(base64.b64decode(body["images"][0]["image"]), dtype=np.uint8).reshape(size, size, 3)
    png = client.post("/v1/images", json={"captions": [BLUE], "seed": 123}).json()["images"][0]["image"]
    assert np.array_equal(raw.astype(int), pixels(png))
    overlay = base64.b64decode(body["images"][0]["attention"][0]["overlay"])
    assert len(overlay) == size * size * 3


def test_numpy_uint8_conversion_equals_the_torch_one(fresh_seed):
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(fresh_seed)) * 2.2 - 1.1
    images[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 1 / 255 - 1, 0.0])          # ends, a half step, the middle
    assert np.array_equal(uint8_images(images), to_uint8_images(images))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        uint8_images(torch.zeros(3, 16, 16))


def test_seed_is_drawn_and_returned_when_absent(client):
    body = client.post("/v1/images", json={"captions": [RED]}).json()
    assert isinstance(body["seed"], int) and body["images"][0]["seed"] == body["seed"]
    assert "attention" not in body["images"][0]


def test_interpolate_endpoints_equal_plain_images(client):
    reply = client.post("/v1/interpolate", json={"captions": [RED, BLUE], "steps": 4, "seed": 5})
    assert reply.status_code == 200, reply.text
    path = reply.json()["images"]
    assert [round(i["beta"], 3) for i in path] == [0.0, 0.333, 0.667, 1.0]
    for caption, end in ((RED, path[0]), (BLUE, path[-1])):
        plain = client.post("/v1/images", json={"captions": [caption], "seed": 5}).json()["images"][0]["image"]
        assert np.abs(pixels(end["image"]) - pixels(plain)).max() <= 1


def test_health_page_static_and_schema(client):
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["max_batch"] == 8 and health["attention"] is True
    assert health["limits"]["captions"] == 16
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('id="caption"', 'id="count"', 'id="attention-strip"', 'id="beta"', "/static/app.js"):
        assert element in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    for name in ("index.html", "app.js", "style.css"):            # nothing from outside (offline)
        text = client.get("/" if name == "index.html" else f"/static/{name}").text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
    schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["ImagesRequest"]
    assert request["additionalProperties"] is False and request["properties"]["n"]["maximum"] == 16
    assert client.get("/docs").status_code == 404                  # Swagger UI would load a CDN


def test_metrics_count_requests_batches_and_images(core):
    with client_for(core) as c:
        c.post("/v1/images", json={"captions": [RED], "n": 3, "seed": 1})
        c.post("/v1/images", json={"captions": []})
        values = metric_values(c.get("/v1/metrics").text)
    assert values[("attnfast_requests_total", frozenset({("endpoint", "/v1/images"), ("status", "200")}))] == 1
    assert values[("attnfast_requests_total", frozenset({("endpoint", "/v1/images"), ("status", "422")}))] == 1
    assert values[("attnfast_images_total", frozenset())] >= 3
    assert values[("attnfast_batch_size_count", frozenset())] >= 1
    assert values[("attnfast_queue_depth", frozenset())] == 0
    assert values[("attnfast_images_per_second", frozenset())] > 0
    assert values[("attnfast_request_latency_seconds_count", frozenset({("endpoint", "/v1/images")}))] == 2


# ------------------------------------------------------------------ bad input
BAD = [
    (b'{"captions": ["a red circle"], "colour": "red"}', 422, "colour"),
    (b'{"captions": "a red circle"}', 422, "captions"),
    (b'{"n": 2}', 422, "captions"),
    (b'{"captions": []}', 422, "captions"),
    (b'{"captions": ["a red circle"], "n": "4"}', 422, "n"),
    (b'{"captions": ["a red circle"], "n": 4.0}', 422, "n"),
    (b'{"captions": ["a red circle"], "n": true}', 422, "n"),
    (b'{"captions": ["a red circle"], "n": 0}', 422, "n"),
    (b'{"captions": ["a red circle"], "n": 17}', 422, "n"),
    (b'{"captions": ["a red circle"], "seed": -1}', 422, "seed"),
    (b'{"captions": ["a red circle"], "attention": "yes"}', 422, "attention"),
    (b'{"captions": ["a red circle"], "format": "gif"}', 422, "format"),
    (b'{"captions": ["a red circle"], "format": "RAW"}', 422, "format"),
    (b'{"captions": ["a red circle", 5]}', 422, "captions[1]"),
    (b'{"captions": ["   "]}', 422, "captions[0]"),
    (b'{"captions": [""]}', 422, "captions[0]"),
    (b'{"captions": ["!!!"]}', 422, "captions[0]"),
    (b'{"captions": ["a red circle", "zebra giraffe"]}', 422, "captions[1]"),
    (b'{"captions": ["\\ud800 red circle"]}', 422, "captions[0]"),
    (b'{"captions": ["' + b"a" * 301 + b'"]}', 422, "captions[0]"),
    (b'{"captions": [' + b'"a", ' * 16 + b'"a"]}', 422, "captions"),
    (b'{"captions": ["a red circle"], "n": 16, "seed": 1}' , 422, "n"),      # 16 images > queue 8
    (b'{"captions": ["caf\xe9 red circle"]}', 400, "body"),                  # Latin-1, not UTF-8
    (b'{"captions": ["a red circle"', 400, "body"),
    (b"", 422, "body"),
    (b'[1, 2]', 422, "body"),
    (b'{"captions": ["' + b"a" * 2000 + b'"]}', 413, "body"),
]


@pytest.mark.parametrize("body, status, field", BAD)
def test_bad_requests_name_the_field(core, body, status, field):
    with client_for(core, max_queue=8, max_body_bytes=1024) as c:
        reply = c.post("/v1/images", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == status, reply.text
        assert reply.json()["field"] == field and reply.json()["error"]
        assert c.post("/v1/images", json={"captions": [RED], "seed": 1}).status_code == 200   # still serving


def test_interpolate_and_routing_errors(client):
    for body, field in (({"captions": [RED]}, "captions"), ({"captions": [RED, BLUE], "steps": 1}, "steps"),
                        ({"captions": [RED, BLUE], "steps": 17}, "steps"),
                        ({"captions": [RED, BLUE], "beta": 0.5}, "beta")):
        reply = client.post("/v1/interpolate", json=body)
        assert reply.status_code == 422 and reply.json()["field"] == field, reply.text
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/images").status_code == 405
    chunked = client.post("/v1/images", content=iter([b'{"captions": ["', b"a" * 70000, b'"]}']),
                          headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["field"] == "body"


def test_fuzz_then_a_good_request(core, fresh_seed):
    """A few hundred malformed requests (mutated bodies, junk bytes, wrong types, odd headers):
    every answer is a 4xx JSON naming a field (or a 200 when a mutation happens to be valid), never
    a 5xx; then a good request succeeds."""
    rng = random.Random(fresh_seed)
    good = {"captions": [RED], "n": 1, "seed": 3, "attention": False, "format": "png"}
    junk_values = [None, -1, 2**70, 1.5, "", "x" * 400, [], {}, [1, [2]], True, "\u0000", "\ud800", {"a": 1}]

    def mutated() -> bytes:
        kind = rng.randrange(6)
        body = dict(good)
        if kind == 0:
            body[rng.choice(list(good))] = rng.choice(junk_values)
        elif kind == 1:
            body[rng.choice(["extra", "Captions", "", "n "])] = rng.choice(junk_values)
        elif kind == 2:
            del body[rng.choice(list(good))]
            body["captions"] = [rng.choice(junk_values)] if rng.random() < 0.5 else body.get("captions", 1)
        elif kind == 3:
            raw = json.dumps(body).encode()
            cut = rng.randrange(len(raw))
            return raw[:cut] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8))) + raw[cut + 1:]
        elif kind == 4:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        else:
            return json.dumps(rng.choice(junk_values)).encode()
        return json.dumps(body).encode()

    statuses = {}
    with client_for(core, max_body_bytes=4096) as c:
        for _ in range(300):
            body = mutated()
            headers = {"content-type": rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded"])}
            reply = c.post(rng.choice(["/v1/images", "/v1/interpolate"]), content=body, headers=headers)
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            assert reply.status_code < 500, (body, reply.text)
            if reply.status_code >= 400:
                assert reply.json()["field"], (body, reply.text)
        assert c.post("/v1/images", json=good).status_code == 200
    assert sum(v for k, v in statuses.items() if 400 <= k < 500) >= 200, statuses


# ------------------------------------------------------------------ dynamic batching
def test_concurrent_requests_merge_into_batches_and_keep_their_images(core):
    """Five requests arriving together (max wait 1 s) run as one batch; each gets the image it
    gets alone."""
    with client_for(core, max_wait_ms=1000) as c:
        alone = {seed: c.post("/v1/images", json={"captions": [cap], "seed": seed}).json()["images"][0]["image"]
                 for seed, cap in ((1, RED), (2, BLUE), (3, RED), (4, BLUE), (5, RED))}
        before = metric_values(c.get("/v1/metrics").text)[("attnfast_batch_size_count", frozenset())]
        results = {}

        def ask(seed, caption):
            results[seed] = c.post("/v1/images", json={"captions": [caption], "seed": seed}).json()

        threads = [threading.Thread(target=ask, args=(seed, RED if seed % 2 else BLUE)) for seed in alone]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = metric_values(c.get("/v1/metrics").text)
    assert after[("attnfast_batch_size_count", frozenset())] - before < 5           # some were merged
    for seed, image in alone.items():
        assert np.abs(pixels(results[seed]["images"][0]["image"]) - pixels(image)).max() <= 1


def test_a_request_larger_than_a_batch_is_split_and_reassembled(core):
    with client_for(core, max_batch=4) as c:
        body = c.post("/v1/images", json={"captions": [RED, BLUE], "n": 5, "seed": 40}).json()
        assert [i["seed"] for i in body["images"]] == list(range(40, 50))
        single = c.post("/v1/images", json={"captions": [BLUE], "seed": 47}).json()["images"][0]["image"]
        assert np.abs(pixels(body["images"][7]["image"]) - pixels(single)).max() <= 1
        values = metric_values(c.get("/v1/metrics").text)
    assert values[("attnfast_batch_size_bucket", frozenset({("le", "4.0")}))] >= 3


class _BlockingCore:
    """A core whose draw waits for ``release``: holds the worker so that the queue fills."""

    def __init__(self, core):
        self.core, self.release, self.entered = core, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.core, name)

    def draw(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(60)
        return self.core.draw(*args, **kwargs)


def test_a_full_queue_answers_503_with_retry_after_and_recovers(core):
    blocking = _BlockingCore(core)
    with client_for(blocking, max_batch=4, max_queue=4, max_wait_ms=0) as c:
        results = []
        first = threading.Thread(target=lambda: results.append(
            c.post("/v1/images", json={"captions": [RED], "n": 4, "seed": 1}).status_code))
        first.start()
        assert blocking.entered.wait(30)                     # the worker holds the first batch
        second = threading.Thread(target=lambda: results.append(
            c.post("/v1/images", json={"captions": [RED], "n": 4, "seed": 5}).status_code))
        second.start()
        deadline = time.monotonic() + 30
        while c.app.state.batcher.queued < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        full = c.post("/v1/images", json={"captions": [RED], "seed": 9})
        assert full.status_code == 503 and full.json()["field"] == "queue"
        assert int(full.headers["Retry-After"]) >= 1
        blocking.release.set()
        first.join(60)
        second.join(60)
        assert results == [200, 200]
        assert c.post("/v1/images", json={"captions": [RED], "seed": 9}).status_code == 200
        values = metric_values(c.get("/v1/metrics").text)
    assert values[("attnfast_requests_total", frozenset({("endpoint", "/v1/images"), ("status", "503")}))] == 1


# ------------------------------------------------------------------ the command
def test_serve_cli_defaults_and_errors(tmp_path, capsys):
    args = serve_cli.build_parser().parse_args(["--checkpoint", "x.pt"])
    assert args.host == "127.0.0.1" and args.max_batch == 64 and args.max_wait_ms == 10
    assert serve_cli.main(["--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert serve_cli.main(["--checkpoint", "x.pt", "--max-batch", "0"]) == 2
    assert "--max-batch must be >= 1" in capsys.readouterr().err


def test_sigterm_drains_the_request_in_flight(gan_checkpoint):
    """A real server: a request waits in the queue (max wait 3 s), SIGTERM arrives, the request is
    still answered, then the process exits."""
    import urllib.request
    with ServerProcess("--checkpoint", str(gan_checkpoint), "--max-wait-ms", "3000", "--max-batch", "8") as server:
        answer = {}

        def ask():
            request = urllib.request.Request(f"{server.url}/v1/images", method="POST",
                                             data=json.dumps({"captions": [RED], "seed": 2}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as reply:
                answer["status"], answer["body"] = reply.status, json.loads(reply.read())

        thread = threading.Thread(target=ask)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{server.url}/v1/health", timeout=10) as reply:
                if json.loads(reply.read())["queue"] == 1:
                    break
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        thread.join(120)
        code = server.proc.wait(60)
    assert answer.get("status") == 200, server.log
    assert len(answer["body"]["images"]) == 1
    assert code in (0, -signal.SIGTERM), server.log
    assert "drained; 1 images served" in server.log
