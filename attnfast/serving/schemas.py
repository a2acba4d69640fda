"""The API's request bodies as pydantic models (strict types, unknown fields refused), built from the
server's limits so that the caps and the OpenAPI schema agree."""
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .settings import ServeSettings

MAX_SEED = 2**32 - 1
Format = Literal["png", "jpeg", "raw"]
FORMAT_DOC = ('"png" or "jpeg": base64 image files; "raw": base64 of the uint8 RGB pixels, size x size x 3 '
              "in C order (row after row), the cheapest to encode and decode")


def _caption_text(text: str) -> str:
    """A caption must hold a non-space character and be encodable as UTF-8 (a JSON escape can carry
    a lone surrogate, which is no text)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid UTF-8 text ({exc.reason} at character {exc.start})") from None
    if not text.strip():
        raise ValueError("empty caption")
    return text


def request_models(settings: ServeSettings) -> tuple[type[BaseModel], type[BaseModel]]:
    """(ImagesRequest, InterpolateRequest) with the caps of ``settings``."""
    Caption = Annotated[str, Field(min_length=1, max_length=settings.max_caption_chars),
                        AfterValidator(_caption_text)]
    Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
    strict = ConfigDict(strict=True, extra="forbid")

    class ImagesRequest(BaseModel):
        """Images for each caption; image k of caption c is drawn with seed ``seed + c * n + k``."""
        model_config = strict
        captions: list[Caption] = Field(min_length=1, max_length=settings.max_captions)
        n: int = Field(1, ge=1, le=settings.max_n, description="images per caption")
        seed: Seed | None = Field(None, description="default: drawn by the server (and returned)")
        attention: bool = Field(False, description="also each word's attention map and overlay")
        format: Format = Field("png", description=FORMAT_DOC)

    class InterpolateRequest(BaseModel):
        """The GAN-INT path from captions[0] to captions[1] with the noise of ``seed``."""
        model_config = strict
        captions: list[Caption] = Field(min_length=2, max_length=2)
        steps: int = Field(8, ge=2, le=settings.max_steps)
        seed: Seed | None = None
        format: Format = Field("png", description=FORMAT_DOC)

    return ImagesRequest, InterpolateRequest


# ------------------------------------------------------------------ what the server answers
# Documented in /openapi.json (FastAPI's ``responses=``); the handlers return plain dicts, which these
# models describe without re-validating them on every request.

class FieldError(BaseModel):
    field: str = Field(description='where, e.g. "captions[1]" or "n"')
    message: str


class ErrorBody(BaseModel):
    """Every error: a message and the field it concerns ("body" for the body as a whole, "queue" or
    "server" for a 503); a 422 also lists every invalid field in ``errors``."""
    error: str
    field: str
    errors: list[FieldError] | None = Field(None, description="422 only: every invalid field")


class CaptionInfo(BaseModel):
    text: str = Field(description="the caption as sent")
    tokens: list[str] = Field(description="the words as the model saw them")
    unknown: list[str] = Field(description="the words the model does not know (dropped)")


class WordAttention(BaseModel):
    word: str
    map: str = Field(description="base64 PNG (h, w) grey: the word's attention over the last attentional "
                     "stage's regions, min-max normalised")
    overlay: str = Field(description="base64 image (size, size) in the request's format (raw too): the map "
                         "laid over the image")


class ImageItem(BaseModel):
    caption: int = Field(description="index of its caption in the request")
    seed: int = Field(description="the seed it was drawn with")
    image: str = Field(description="base64 PNG or JPEG file (size x size, RGB), or raw pixels (see format)")
    attention: list[WordAttention] | None = Field(None, description="with attention=true only: per word")


class ImagesResponse(BaseModel):
    seed: int = Field(description="the request's seed (drawn by the server when absent)")
    format: Format
    size: int = Field(description="side of the images in pixels")
    captions: list[CaptionInfo]
    images: list[ImageItem]


class PathImage(BaseModel):
    beta: float = Field(description="0: captions[0]'s plain image for the seed, 1: captions[1]'s")
    image: str = Field(description="base64 PNG or JPEG file, or raw pixels (see format)")


class InterpolateResponse(BaseModel):
    seed: int
    format: Format
    size: int
    captions: list[CaptionInfo]
    images: list[PathImage]


class Limits(BaseModel):
    captions: int
    n: int
    caption_chars: int
    steps: int
    body_bytes: int
    queue: int


class HealthResponse(BaseModel):
    status: Literal["ok"]
    queue: int = Field(description="images waiting for a generator batch")
    max_batch: int
    max_wait_ms: float
    device: str
    graphs: bool
    amp: str
    words_num: int
    vocabulary: int = Field(description="words the model knows")
    stages: int
    attention: bool
    limits: Limits


def _error(description: str, **extra) -> dict:
    return {"model": ErrorBody, "description": description, **extra}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                               "schema": {"type": "integer", "minimum": 1}}}
POST_ERRORS = {
    400: _error("malformed JSON, or a body that is not UTF-8"),
    413: _error("a body over --max-body-bytes (whatever Content-Length says)"),
    422: _error("a wrong type, an unknown or missing field, a value over its cap, an empty caption, or a "
                "caption without any word the model knows: a caption valid by this schema may still "
                "hold no known word (the vocabulary is the model's), so it can be refused here"),
    503: _error("the queue is full (or the server is shutting down): retry after Retry-After seconds",
                headers=RETRY_AFTER),
}
