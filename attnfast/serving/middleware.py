"""ASGI middleware of the server: request counting and latency (outermost, so that it sees every
answer), and the body guard (size cap, UTF-8) in front of the JSON parsing."""
import json
import time

KNOWN_PATHS = ("/", "/v1/images", "/v1/interpolate", "/v1/health", "/v1/metrics", "/openapi.json")


async def send_json_error(send, status: int, field: str, message: str, headers: list | None = None) -> None:
    """An error answer in the API's shape: {"error": message, "field": field}."""
    body = json.dumps({"error": message, "field": field}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Counts every HTTP answer by endpoint and status, and times it (until its last byte)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in KNOWN_PATHS else ("/static" if path.startswith("/static/") else "other")
        started = time.perf_counter()
        status = {"code": 500}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


class BodyGuard:
    """Reads a request body up to ``max_bytes`` (413 beyond, whatever Content-Length says) and refuses
    one that is not UTF-8 (400), before any parsing; the app then reads the buffered body."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_large = f"the request body exceeds {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await send_json_error(send, 413, "body", too_large)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await send_json_error(send, 413, "body", too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return await send_json_error(send, 400, "body", f"the request body is not UTF-8 "
                                         f"(invalid byte at offset {exc.start})")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
