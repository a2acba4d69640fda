"""The API's request bodies as pydantic models (strict types, unknown fields refused), built from the
server's limits so that the caps and the OpenAPI schema agree."""
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .settings import ServeSettings

MAX_SEED = 2**32 - 1


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
        format: Literal["png", "jpeg"] = "png"

    class InterpolateRequest(BaseModel):
        """The GAN-INT path from captions[0] to captions[1] with the noise of ``seed``."""
        model_config = strict
        captions: list[Caption] = Field(min_length=2, max_length=2)
        steps: int = Field(8, ge=2, le=settings.max_steps)
        seed: Seed | None = None
        format: Literal["png", "jpeg"] = "png"

    return ImagesRequest, InterpolateRequest
