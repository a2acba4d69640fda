"""Load test of ``python -m attnfast.serve`` (DESIGN.md §7; issue 19): dynamic batching against
batch-1 serving, measured side by side in one run.

    python bench/serve_bench.py [--checkpoint runs/demo/gan.pt] [--clients 32] [--seconds 20] [--repeats 3]
    python bench/serve_bench.py --gpu          # GPU-sized: cuda, bf16, CUDA graphs, 256 clients, batch 256
    python bench/serve_bench.py --gpu --untrained training/configs/shapes_demo.yaml   # a bare machine
    python bench/serve_bench.py --null-model [--seconds 5] [--clients 32]   # the serving stack alone

Starts two servers on 127.0.0.1 from the same checkpoint, one with ``--max-batch B`` (dynamic
batching) and one with ``--max-batch 1``; then, alternating between them ``--repeats`` times (so
that a noisy neighbour hits both), K client threads each send one request after another (one
caption, ``--n`` images, a fresh seed) for ``--seconds``. Every loop is bounded in time and count
and the servers are stopped at the end. Per run: images/s, latency p50/p95/p99 of the requests,
mean batch size (the server's /v1/metrics). Results: a table and bench/results/serve_<device kind>.json.

``--null-model``: the serving stack's own ceiling. One server per image size (``--sizes``, 64 and 128)
runs ``python -m attnfast.serve --null-model SIZE`` (the same app, batcher and encoding; the generator
returns fixed images and costs nothing), and the clients ask 1 and 16 images per request (``--ns``) in
PNG, JPEG and raw (``--formats``), ``--repeats`` runs per case (medians reported). Per run also the
CPU time the server process and the clients spent per image. Also measured in this process, one
thread: the encoding's CPU cost per image.
The machine's load average before and after is recorded (other jobs share the cores). Results:
bench/results/serve_null_<device kind>.json.
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlparse

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import device_info, print_table, write_results  # noqa: E402

from attnfast.serving.encoding import encode_images  # noqa: E402
from attnfast.serving.launcher import ServerProcess  # noqa: E402
from attnfast.serving.null_model import NullGenerator  # noqa: E402

CAPTIONS = ["a large red circle in the center", "a large blue square in the center on a beige background",
            "a large yellow triangle in the center with a navy background", "a large green star in the center",
            "a large white diamond at the center on a teal background", "a large orange cross in the center"]
MAX_REQUESTS_PER_CLIENT = 100_000


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def scrape(url: str) -> dict:
    """Batch-size histogram sum and count from the server's /v1/metrics."""
    from prometheus_client.parser import text_string_to_metric_families
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.request("GET", "/v1/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("attnfast_batch_size_sum", "attnfast_batch_size_count"):
                out[sample.name] = sample.value
    return out


def client(url: str, index: int, n: int, stop_at: float, latencies: list, errors: list, fmt: str = "png") -> None:
    """One client: requests back to back until ``stop_at`` (or MAX_REQUESTS_PER_CLIENT); it reads each
    answer whole but does not decode it (the server's cost is measured, not the client's)."""
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=300)
    for k in range(MAX_REQUESTS_PER_CLIENT):
        if time.monotonic() >= stop_at:
            break
        body = json.dumps({"captions": [CAPTIONS[(index + k) % len(CAPTIONS)]], "n": n,
                           "seed": index * MAX_REQUESTS_PER_CLIENT + k, "format": fmt})
        started = time.perf_counter()
        try:
            conn.request("POST", "/v1/images", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            payload = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=300)
            continue
        if reply.status != 200:
            errors.append(f"HTTP {reply.status}: {payload[:200]!r}")
            continue
        latencies.append(time.perf_counter() - started)
    conn.close()


def load_run(url: str, clients: int, n: int, seconds: float, fmt: str = "png") -> dict:
    """K clients against ``url`` for ``seconds``: images/s, latency percentiles (ms), batch size."""
    before = scrape(url)
    latencies, errors = [], []
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(url, i, n, started + seconds, latencies, errors, fmt))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started          # includes the requests in flight at the deadline
    after = scrape(url)
    batches = after["attnfast_batch_size_count"] - before["attnfast_batch_size_count"]
    images = after["attnfast_batch_size_sum"] - before["attnfast_batch_size_sum"]
    ms = sorted(1000 * v for v in latencies) or [float("nan")]
    return {"requests": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
            "images": int(images), "seconds": elapsed, "images_per_s": n * len(latencies) / elapsed,
            "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
            "mean_batch": images / batches if batches else None}


NULL_TARGET = {"size": 64, "n": 16, "images_per_s": 4000.0}       # issue 26, on the 2-core CPU
GPU_TARGET_IMAGES_PER_S = 10_000.0                                   # the GPU target at 64x64


def encoding_cost(size: int, fmt: str, seconds: float = 1.0) -> float:
    """CPU microseconds per image of the server's encoding (uint8 conversion, PNG/JPEG file or raw
    bytes, base64) of null-model images at ``size``, measured here on one thread for about ``seconds``."""
    images = NullGenerator(size, max_batch=16).images[:16]
    encode_images(images, fmt)
    count, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        encode_images(images, fmt)
        count += len(images)
    return 1e6 * (time.process_time() - cpu) / count


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured_run(server, clients: int, n: int, seconds: float, fmt: str) -> dict:
    """:func:`load_run` plus the CPU time the server process and this process (the clients) spent
    per image: on a shared machine these say more than images/s, which other jobs' load lowers."""
    server_before, clients_before = process_cpu_seconds(server.proc.pid), time.process_time()
    row = load_run(server.url, clients, n, seconds, fmt)
    served = max(n * row["requests"], 1)
    row["server_cpu_us_per_image"] = 1e6 * (process_cpu_seconds(server.proc.pid) - server_before) / served
    row["client_cpu_us_per_image"] = 1e6 * (time.process_time() - clients_before) / served
    return row


def null_cases(rows: list[dict]) -> list[dict]:
    """Per (size, n, format): medians over the repeats (images/s also min and max), errors summed."""
    cases = []
    for key in dict.fromkeys((r["size"], r["n"], r["format"]) for r in rows):
        runs = [r for r in rows if (r["size"], r["n"], r["format"]) == key]
        rates = [r["images_per_s"] for r in runs]
        case = {"size": key[0], "n": key[1], "format": key[2], "runs": len(runs),
                "images_per_s": statistics.median(rates), "images_per_s_min": min(rates),
                "images_per_s_max": max(rates), "errors": sum(r["errors"] for r in runs)}
        for name in ("p50_ms", "p99_ms", "server_cpu_us_per_image", "client_cpu_us_per_image"):
            case[name] = statistics.median(r[name] for r in runs)
        cases.append(case)
    return cases


def null_summary(cases: list[dict]) -> dict:
    """Per format at the target's size and images per request (medians over the repeats): images/s
    against the target, and the host cores the GPU target needs for the serving stack, from the
    server's CPU time per image (clients excluded: on a GPU host they are elsewhere)."""
    out = {}
    for case in cases:
        if (case["size"], case["n"]) != (NULL_TARGET["size"], NULL_TARGET["n"]):
            continue
        out[case["format"]] = {
            "images_per_s": case["images_per_s"], "images_per_s_max": case["images_per_s_max"],
            "meets_target": case["images_per_s"] >= NULL_TARGET["images_per_s"],
            "server_cpu_us_per_image": case["server_cpu_us_per_image"],
            "host_cores_for_gpu_target": GPU_TARGET_IMAGES_PER_S * case["server_cpu_us_per_image"] / 1e6}
    return {"case": f"{NULL_TARGET['size']}px, {NULL_TARGET['n']} images per request",
            "target_images_per_s": NULL_TARGET["images_per_s"], "gpu_target_images_per_s": GPU_TARGET_IMAGES_PER_S,
            "by_format": out}


def null_model_main(args) -> int:
    """The ``--null-model`` runs (see the module docstring)."""
    sizes = [int(v) for v in args.sizes.split(",")]
    ns = [int(v) for v in args.ns.split(",")]
    formats = args.formats.split(",")
    clients, seconds, repeats = args.clients or 32, args.seconds or 5.0, args.repeats or 2
    max_batch = args.max_batch or 64
    cores = os.cpu_count()
    meta = device_info(torch.device("cpu"))
    meta.update({"null_model": True, "clients": clients, "seconds_per_run": seconds, "repeats": repeats,
                 "max_batch": max_batch, "max_wait_ms": args.max_wait_ms, "cpu_count": cores,
                 "loadavg_before": os.getloadavg(), "target": NULL_TARGET,
                 "note": f"the server (one process) and {clients} client threads (one process, reading each "
                 f"answer whole without decoding it) share the machine's {cores} cores; other jobs may run "
                 "too (loadavg_before/after: 1, 5, 15 minute load averages)"})
    print(f"serve_bench --null-model: load average {meta['loadavg_before']} on {cores} cores", flush=True)
    meta["encoding_us_per_image"] = {f"{size} {fmt}": encoding_cost(size, fmt) for size in sizes for fmt in formats}
    rows = []
    for size in sizes:
        flags = ["--null-model", str(size), "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms),
                 "--max-queue", str(max(4 * clients * max(ns), max_batch)), "--log-level", "warning"]
        with ServerProcess(*flags, timeout=300) as server:
            for n in ns:
                for fmt in formats:
                    load_run(server.url, clients, n, args.warmup_seconds, fmt)
                    for repeat in range(repeats):
                        row = {"size": size, "n": n, "format": fmt, "repeat": repeat,
                               **measured_run(server, clients, n, seconds, fmt)}
                        row["images_per_s_per_core"] = row["images_per_s"] / cores
                        rows.append(row)
                        print(f"  {size}px n={n} {fmt}: {row['images_per_s']:.0f} images/s, "
                              f"p50 {row['p50_ms']:.0f} ms, "
                              f"p99 {row['p99_ms']:.0f} ms, mean batch {row['mean_batch'] or 0:.1f}, server "
                              f"{row['server_cpu_us_per_image']:.0f} CPU us/image, errors {row['errors']}", flush=True)
    meta["loadavg_after"] = os.getloadavg()
    cases = null_cases(rows)
    print(f"\nnull model, {clients} clients, {repeats} x {seconds:.0f} s per case, on {meta['device']} ({cores} cores, "
          f"clients and server together; load average before {meta['loadavg_before'][0]:.2f}, "
          f"after {meta['loadavg_after'][0]:.2f}); medians over the repeats")
    print_table(cases, [("size", "size", "d"), ("n", "n", "d"), ("format", "format", ""),
                        ("images_per_s", "images/s", ".0f"), ("images_per_s_min", "min", ".0f"),
                        ("images_per_s_max", "max", ".0f"), ("p50_ms", "p50 ms", ".1f"), ("p99_ms", "p99 ms", ".1f"),
                        ("server_cpu_us_per_image", "server CPU us/image", ".0f"),
                        ("client_cpu_us_per_image", "client CPU us/image", ".0f"), ("errors", "errors", "d")])
    meta["summary"] = summary = null_summary(cases)
    for fmt, row in summary["by_format"].items():
        print(f"{summary['case']}, {fmt}: {row['images_per_s']:.0f} images/s (median; target "
              f"{NULL_TARGET['images_per_s']:.0f}: {'met' if row['meets_target'] else 'NOT met'}); the server spent "
              f"{row['server_cpu_us_per_image']:.0f} CPU us per image: {GPU_TARGET_IMAGES_PER_S:.0f} images/s need "
              f"about {row['host_cores_for_gpu_target']:.1f} such cores for the serving stack")
    path = write_results("serve_null", cases + rows, meta, args.results_dir)
    print(f"results: {path}")
    return 0


def untrained_checkpoint(config: str, device: str, out_dir: str) -> str:
    """A GAN checkpoint of ``config``'s model after one DAMSM and one GAN step, for a machine without
    a trained one (a lent GPU starts bare): serving speed depends on the model's sizes, not on its
    weights. Returns the path of gan.pt in ``out_dir``."""
    train = [sys.executable, "-m", "attnfast.train", "--config", config, "--out", out_dir, "--steps", "1",
             "--device", device, "--no-progress"]
    for stage in (["--stage", "damsm"], ["--stage", "gan", "--damsm", os.path.join(out_dir, "damsm.pt")]):
        subprocess.run(train + stage, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(out_dir, "gan.pt")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="runs/demo/gan.pt")
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients (32; --gpu 256)")
    parser.add_argument("--n", type=int, default=1, help="images per request")
    parser.add_argument("--seconds", type=float, default=None, help="length of one measured run "
                        "(20; --null-model 5)")
    parser.add_argument("--warmup-seconds", type=float, default=3.0, help="unmeasured run per server first")
    parser.add_argument("--repeats", type=int, default=None, help="measured runs per mode, interleaved "
                        "(3; --null-model: runs per case, 2)")
    parser.add_argument("--max-batch", type=int, default=None, help="dynamic mode's --max-batch (64; --gpu 256)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--gpu", action="store_true", help="GPU-sized: --device cuda --amp bf16 --graphs, "
                        "256 clients, --max-batch 256")
    parser.add_argument("--untrained", metavar="CONFIG", default=None,
                        help="without --checkpoint's file, serve CONFIG's model after one DAMSM and one GAN "
                        "step (trained first, in a temporary folder)")
    parser.add_argument("--null-model", action="store_true", help="the serving stack alone: a generator "
                        "that costs nothing (python -m attnfast.serve --null-model SIZE), per size, n, format")
    parser.add_argument("--sizes", default="64,128", help="--null-model: image sizes")
    parser.add_argument("--ns", default="1,16", help="--null-model: images per request")
    parser.add_argument("--formats", default="png,jpeg,raw", help="--null-model: image formats")
    parser.add_argument("--results-dir", default=None, help="where the JSON goes (default bench/results)")
    args = parser.parse_args(argv)
    if args.null_model:
        if args.gpu or args.untrained:
            parser.error("--null-model runs on the CPU without a model: no --gpu or --untrained")
        return null_model_main(args)
    args.seconds = args.seconds or 20.0
    args.repeats = args.repeats or 3
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs a CUDA device")
    trained = os.path.isfile(args.checkpoint)
    if not trained and args.untrained:
        print(f"serve_bench: {args.checkpoint} not found: serving {args.untrained}'s model after one training "
              "step (same sizes, so the same speed)", flush=True)
        args.checkpoint = untrained_checkpoint(args.untrained, "cuda" if args.gpu else "cpu",
                                               tempfile.mkdtemp(prefix="serve_bench_"))
    elif not trained:                            # `make bench` runs every bench: say why, do not fail
        print(f"serve_bench: skipped: checkpoint not found: {args.checkpoint} (make demo writes runs/demo/gan.pt; "
              "--untrained CONFIG serves an untrained model of that config)")
        return 0
    clients = args.clients or (256 if args.gpu else 32)
    max_batch = args.max_batch or (256 if args.gpu else 64)
    common = ["--checkpoint", args.checkpoint, "--max-wait-ms", str(args.max_wait_ms),
              "--max-queue", str(max(4 * clients * args.n, max_batch)), "--log-level", "warning"]
    if args.gpu:
        common += ["--device", "cuda", "--amp", "bf16", "--graphs"]
    else:
        common += ["--device", "cpu"]
    modes = {f"dynamic (max-batch {max_batch})": ["--max-batch", str(max_batch)], "batch 1": ["--max-batch", "1"]}
    device = torch.device("cuda" if args.gpu else "cpu")
    meta = device_info(device)
    meta.update({"checkpoint": args.checkpoint, "trained": trained, "clients": clients, "images_per_request": args.n,
                 "seconds_per_run": args.seconds, "repeats": args.repeats, "max_wait_ms": args.max_wait_ms,
                 "server_flags": common, "note": "clients and servers share the machine; on the 2-core CI "
                 "machine other jobs may run too: compare the modes within one run"})
    rows = []
    servers = {}
    try:
        for name, flags in modes.items():
            servers[name] = ServerProcess(*common, *flags, timeout=600)
        for name in modes:
            load_run(servers[name].url, clients, args.n, args.warmup_seconds)
        for repeat in range(args.repeats):
            order = list(modes) if repeat % 2 == 0 else list(reversed(modes))
            for name in order:
                row = {"mode": name, "repeat": repeat, **load_run(servers[name].url, clients, args.n, args.seconds)}
                rows.append(row)
                print(f"  {name} run {repeat}: {row['images_per_s']:.1f} images/s, p99 {row['p99_ms']:.0f} ms, "
                      f"mean batch {row['mean_batch'] or 0:.1f}, errors {row['errors']}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    summary = []
    for name in modes:
        runs = [r for r in rows if r["mode"] == name]
        rates = [r["images_per_s"] for r in runs]
        summary.append({"mode": name, "runs": len(runs), "images_per_s": statistics.median(rates),
                        "images_per_s_min": min(rates), "images_per_s_max": max(rates),
                        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                        "p95_ms": statistics.median(r["p95_ms"] for r in runs),
                        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                        "p99_ms_max": max(r["p99_ms"] for r in runs),
                        "mean_batch": statistics.median(r["mean_batch"] or 0 for r in runs),
                        "errors": sum(r["errors"] for r in runs)})
    dynamic, single = summary
    ratios = [a["images_per_s"] / b["images_per_s"] for a, b in
              zip([r for r in rows if r["mode"] == dynamic["mode"]], [r for r in rows if r["mode"] == single["mode"]], strict=True)]
    dynamic["speedup_vs_batch_1"] = statistics.median(ratios)
    dynamic["speedup_min"], dynamic["speedup_max"] = min(ratios), max(ratios)
    print(f"\n{clients} clients x {args.n} image(s) per request, {args.repeats} x {args.seconds:.0f} s per mode "
          f"on {meta['device']}")
    print_table(summary, [("mode", "mode", ""), ("images_per_s", "images/s", ".1f"),
                          ("images_per_s_min", "min", ".1f"), ("images_per_s_max", "max", ".1f"),
                          ("p50_ms", "p50 ms", ".0f"), ("p95_ms", "p95 ms", ".0f"), ("p99_ms", "p99 ms", ".0f"),
                          ("mean_batch", "batch", ".1f"), ("errors", "errors", "d")])
    print(f"dynamic batching / batch 1: {dynamic['speedup_vs_batch_1']:.2f}x (per repeat "
          f"{', '.join(f'{r:.2f}' for r in ratios)})")
    path = write_results("serve", summary + rows, meta, args.results_dir)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
