"""The HTTP API and the web page (FastAPI on uvicorn).

    POST /v1/images       {"captions": [...], "n": 4, "seed": 7, "attention": true, "format": "png"}
    POST /v1/interpolate  {"captions": [a, b], "steps": 8, "seed": 0, "format": "png"}
    GET  /v1/health       model and queue facts
    GET  /v1/metrics      Prometheus text
    GET  /                the web page (attnfast/serving/static)
    GET  /openapi.json    the API's schema

Every error is JSON ``{"error": message, "field": name}`` with a 4xx (5xx only for a failure inside
the model); 503 with Retry-After when the queue is full.
"""
import asyncio
import inspect
import json
import logging
import random
from contextlib import asynccontextmanager
from importlib import resources

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from attnfast.generation import GenerationError
from .batcher import DynamicBatcher, QueueFull, ShuttingDown
from .encoding import encode_attention, encode_images
from .metrics import ServeMetrics
from .middleware import BodyGuard, RequestMetrics
from .schemas import MAX_SEED, POST_ERRORS, HealthResponse, ImagesResponse, InterpolateResponse, request_models
from .settings import ServeSettings

LOG = logging.getLogger("attnfast")


def _field_name(loc) -> str:
    """pydantic's error location ("body", "captions", 1) -> "captions[1]"."""
    name = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = []
    for error in exc.errors():
        field, kind = _field_name(error.get("loc", ())), error.get("type", "")
        if kind == "json_invalid":
            return JSONResponse({"error": f"malformed JSON: {error.get('ctx', {}).get('error', error['msg'])}",
                                 "field": "body"}, status_code=400)
        message = {"extra_forbidden": "unknown field", "missing": "required field"}.get(kind, error["msg"])
        errors.append({"field": field, "message": message})
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    return JSONResponse({"error": f"{first['field']}: {first['message']}", "field": first["field"],
                         "errors": errors}, status_code=422)


def _error(status: int, field: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _json(payload: dict) -> Response:
    """A JSON answer serialised here (called on an encoding thread), not by FastAPI's encoder on the
    event loop: the images are long base64 strings, which the encoder would walk again."""
    return Response(json.dumps(payload, separators=(",", ":")).encode(), media_type="application/json")


def _no_native_telemetry() -> dict:
    """FastAPI's own OpenTelemetry hooks (versions that have them switch them on whenever
    opentelemetry-api is importable) off: the server has its Prometheus metrics, and the hooks cost
    CPU on every request."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}
    return {}


def create_app(core, settings: ServeSettings) -> FastAPI:
    """The app around ``core`` (an :class:`attnfast.generation.SeededGenerator`, which only the
    batcher's worker thread uses). The worker starts with the app's lifespan and, at shutdown (after
    uvicorn has drained the open requests), finishes what is queued before the process ends."""
    metrics = ServeMetrics(settings.max_batch)
    batcher = DynamicBatcher(core, settings.max_batch, settings.max_wait_ms / 1000.0, settings.max_queue, metrics)
    ImagesRequest, InterpolateRequest = request_models(settings)
    static = resources.files("attnfast.serving") / "static"

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)
            LOG.info("attnfast.serve: drained; %d images served", metrics.total_images)

    app = FastAPI(title="attnfast", summary="AttnGAN text-to-image service with dynamic batching",
                  docs_url=None, redoc_url=None, lifespan=lifespan,   # no docs pages: they load a CDN
                  **_no_native_telemetry())
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)               # added last: the outermost

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return _validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, "path" if exc.status_code in (404, 405) else "body", str(exc.detail),
                      getattr(exc, "headers", None))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull):
        return _error(503, "queue", str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(ShuttingDown)
    async def shutting_down(request: Request, exc: ShuttingDown):
        return _error(503, "server", str(exc), {"Retry-After": "1"})

    @app.exception_handler(GenerationError)
    async def bad_caption(request: Request, exc: GenerationError):
        field = "captions" if exc.index is None else f"captions[{exc.index}]"
        return _error(422, field, str(exc))

    def seed_of(value):
        return random.randint(0, MAX_SEED) if value is None else value

    @app.post("/v1/images", response_model=None,
              responses={200: {"model": ImagesResponse, "description": "the images"}, **POST_ERRORS})
    async def images(body: ImagesRequest):
        """Images (base64) per caption, each with its seed; unknown words and the tokens the model
        saw per caption; with ``attention``, per word the map of the last attentional stage."""
        count = len(body.captions) * body.n
        if count > settings.max_queue:
            return _error(422, "n", f"{len(body.captions)} captions x n {body.n} = {count} images "
                          f"exceed the queue of {settings.max_queue}")
        encoded = core.encode(body.captions)
        seed = seed_of(body.seed)
        rows = [row for row in range(len(body.captions)) for _ in range(body.n)]
        seeds = [seed + j for j in range(count)]
        ids, lens = (torch.from_numpy(t.numpy()[rows]) for t in (encoded.ids, encoded.lens))  # no torch op here
        pixels, attention = await batcher.draw(ids, lens, seeds)

        def payload():
            files = encode_images(pixels, body.format)
            out = []
            for j, (row, image) in enumerate(zip(rows, files, strict=True)):
                item = {"caption": row, "seed": seeds[j], "image": image}
                if body.attention:
                    item["attention"] = ([] if attention is None else
                                         encode_attention(pixels[j], attention[j], encoded.tokens[row], body.format))
                out.append(item)
            return _json({"seed": seed, "format": body.format, "size": pixels.shape[-1],
                          "captions": [{"text": text, "tokens": tokens, "unknown": unknown} for text, tokens, unknown
                                       in zip(body.captions, encoded.tokens, encoded.unknown, strict=True)],
                          "images": out})

        return await asyncio.to_thread(payload)

    @app.post("/v1/interpolate", response_model=None,
              responses={200: {"model": InterpolateResponse, "description": "the path's images"}, **POST_ERRORS})
    async def interpolate(body: InterpolateRequest):
        """The GAN-INT path (``steps`` images, beta from 0 to 1) between the two captions."""
        encoded = core.encode(body.captions)
        seed = seed_of(body.seed)
        path = await batcher.call(lambda c: c.interpolate(encoded.ids, encoded.lens, body.steps, seed),
                                  body.steps)
        betas = torch.linspace(0, 1, body.steps).tolist()

        def payload():
            files = encode_images(path, body.format)
            return _json({"seed": seed, "format": body.format, "size": path.shape[-1],
                          "captions": [{"text": text, "tokens": tokens, "unknown": unknown} for text, tokens, unknown
                                       in zip(body.captions, encoded.tokens, encoded.unknown, strict=True)],
                          "images": [{"beta": beta, "image": image} for beta, image in zip(betas, files, strict=True)]})

        return await asyncio.to_thread(payload)

    @app.get("/v1/health", response_model=None,
             responses={200: {"model": HealthResponse, "description": "model, queue and limits"}})
    async def health():
        """The model, the device, the queue and the server's limits."""
        model = core.config["model"]
        return {"status": "ok", "queue": batcher.queued, "max_batch": settings.max_batch,
                "max_wait_ms": settings.max_wait_ms, "device": str(core.device), "graphs": core.graphs,
                "amp": core.amp, "words_num": core.words_num, "vocabulary": len(core.vocab),
                "stages": model["branch_num"], "attention": model["branch_num"] > 1,
                "limits": {"captions": settings.max_captions, "n": settings.max_n,
                           "caption_chars": settings.max_caption_chars, "steps": settings.max_steps,
                           "body_bytes": settings.max_body_bytes, "queue": settings.max_queue}}

    @app.get("/v1/metrics", response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text exposition format (version 1.0.0)",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus():
        """Prometheus metrics: requests, queue depth, batch sizes, latency, images/s."""
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.get("/", response_class=HTMLResponse,
             responses={200: {"description": "the web page", "content": {"text/html": {"schema": {"type": "string"}}}}})
    async def page():
        """The web page: caption box, images, attention strip, interpolation slider."""
        return FileResponse(str(static / "index.html"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app
