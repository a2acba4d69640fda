"""The library behind ``python -m attnfast.serve``: the FastAPI app (app), dynamic batching
(batcher), request models (schemas), limits (settings), Prometheus metrics (metrics), ASGI
middleware (middleware), image encoding (encoding) and the web page (static/)."""
from .app import create_app
from .batcher import DynamicBatcher, QueueFull
from .settings import ServeSettings

__all__ = ["DynamicBatcher", "QueueFull", "ServeSettings", "create_app"]
