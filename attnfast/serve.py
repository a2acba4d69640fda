"""``python -m attnfast.serve``: a text-to-image service with dynamic batching and a web page.

    python -m attnfast.serve --checkpoint runs/demo/gan.pt [--host 127.0.0.1] [--port 8000]
        [--max-batch 64] [--max-wait-ms 10] [--amp] [--graphs]
    python -m attnfast.serve --netG netG_epoch_600.pth --text-encoder text_encoder200.pth \
        --vocab captions.pickle                     # the original AttnGAN's released weights
    python -m attnfast.serve --null-model 64        # fixed images, no model: the serving stack alone

Open http://127.0.0.1:8000/ for the page; the API is described in docs/serving.md and at
/openapi.json. SIGTERM (or Ctrl-C) stops accepting connections, answers the requests in flight,
then exits.
"""
import argparse
import logging
import sys

from attnfast.extras import require_extra, run_cli

LOG = logging.getLogger("attnfast")


def announcing_server(config):
    """uvicorn's server that prints, whatever the log level, the address it listens on once it does
    (the actual port with --port 0): ``attnfast.serve: listening on http://HOST:PORT/``. uvicorn is
    imported here (the ``serve`` extra, checked by :func:`main` before anything else)."""
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                for server in self.servers:
                    for sock in server.sockets:
                        host, port = sock.getsockname()[:2]
                        host = f"[{host}]" if ":" in host else host
                        print(f"attnfast.serve: listening on http://{host}:{port}/", flush=True)

    return AnnouncingServer(config)


def build_parser() -> argparse.ArgumentParser:
    from attnfast.generation.loading import add_model_arguments
    from attnfast.serving.settings import ServeSettings
    defaults = ServeSettings()
    parser = argparse.ArgumentParser(prog="python -m attnfast.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = add_model_arguments(parser)
    source.add_argument("--null-model", type=int, metavar="SIZE", default=None,
                        help="serve fixed SIZExSIZE images from a generator that costs nothing (the shapes "
                        "vocabulary): measures the serving stack alone (bench/serve_bench.py --null-model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", nargs="?", const="bf16", default="off", choices=("off", "bf16", "fp16"))
    parser.add_argument("--graphs", action="store_true",
                        help="CUDA graphs: batches padded to power-of-two sizes up to --max-batch (GPU)")
    parser.add_argument("--no-fuse", action="store_true", help="keep G's BatchNorms (no folding)")
    parser.add_argument("--torch-threads", type=int, default=0, metavar="N",
                        help="torch's CPU threads (0, the default: 1 when the generator is not on the CPU, i.e. on "
                        "a GPU or with --null-model, where torch's CPU work is small copies and a thread pool "
                        "only spins against the encoding threads; torch's own default on a CPU)")
    limits = parser.add_argument_group("batching and limits")
    limits.add_argument("--max-batch", type=int, default=defaults.max_batch, help="images per generator batch")
    limits.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                        help="how long the oldest queued image waits for batch-mates")
    limits.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="images waiting at most; more: 503 with Retry-After")
    limits.add_argument("--max-captions", type=int, default=defaults.max_captions, help="captions per request")
    limits.add_argument("--max-n", type=int, default=defaults.max_n, help="images per caption")
    limits.add_argument("--max-caption-chars", type=int, default=defaults.max_caption_chars)
    limits.add_argument("--max-steps", type=int, default=defaults.max_steps, help="images per interpolation")
    limits.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser


def set_torch_threads(requested: int, generator_on_cpu: bool) -> int:
    """Apply --torch-threads (see build_parser); returns the number of threads torch now uses."""
    import torch
    if requested < 0:
        raise ValueError(f"--torch-threads must be >= 0, got {requested}")
    if requested or not generator_on_cpu:
        torch.set_num_threads(requested or 1)
    return torch.get_num_threads()


def settings_from(args):
    from attnfast.serving.settings import ServeSettings
    return ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                         max_captions=args.max_captions, max_n=args.max_n,
                         max_caption_chars=args.max_caption_chars, max_steps=args.max_steps,
                         max_body_bytes=args.max_body_bytes)


def main(argv=None) -> int:
    require_extra("serve")  # fastapi, uvicorn, prometheus_client: one line and exit 2 when missing
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s")
    try:
        from attnfast.engine.devices import pick_device
        from attnfast.generation import SeededGenerator
        from attnfast.generation.loading import models_from_args
        from attnfast.serving import create_app
        settings = settings_from(args)
        if args.null_model is not None:
            from attnfast.serving.null_model import NullGenerator
            set_torch_threads(args.torch_threads, generator_on_cpu=False)
            core = NullGenerator(args.null_model, max_batch=settings.max_batch)
        else:
            device = pick_device(args.device)
            set_torch_threads(args.torch_threads, generator_on_cpu=device.type == "cpu")
            models = models_from_args(args, device)
            core = SeededGenerator(models, device, amp=args.amp, fuse=not args.no_fuse, graphs=args.graphs,
                                   max_batch=settings.max_batch)
        core.warm_up()
        app = create_app(core, settings)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"attnfast.serve: error: {exc}", file=sys.stderr)
        return 2
    import uvicorn
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=None)
    server = announcing_server(config)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(run_cli("attnfast.serve", main))
