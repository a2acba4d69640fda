"""The error of bad generation input (a caption, a count, a file), as every front end reports it."""


class GenerationError(ValueError):
    """Bad input to the generation core. ``index``: the caption it is about, when it is about one."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index
