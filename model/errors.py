"""The exceptions every layer of cinstyle raises for bad input.

Each one carries a message meant for the user: what was wrong, with the value,
and what is allowed. The service maps them to HTTP statuses in one place
(`app/api/errors.py`); the CLI prints them and exits with status 2.
"""


class CinstyleError(Exception):
    """Base class: a user-facing error with a short machine-readable code."""

    code = "error"


class InvalidImageError(CinstyleError):
    """The bytes are not an image Pillow can decode (or are otherwise unusable)."""

    code = "invalid_image"


class ImageTooLargeError(CinstyleError):
    """The upload or its pixel count exceeds the configured limit."""

    code = "image_too_large"


class UnsupportedMediaTypeError(CinstyleError):
    """A content type or output format we do not handle."""

    code = "unsupported_media_type"


class UnknownStyleError(CinstyleError):
    """A style name that is not in the bank."""

    code = "unknown_style"


class InvalidStyleWeightsError(CinstyleError):
    """Style weights that are negative, not finite, all zero or malformed."""

    code = "invalid_style_weights"


class InvalidParameterError(CinstyleError):
    """Any other bad parameter (strength out of range, bad name, ...)."""

    code = "invalid_parameter"


class BankFormatError(CinstyleError):
    """A checkpoint / style bank file that is not in the cinstyle format."""

    code = "bad_checkpoint"


class CancelledError(CinstyleError):
    """A long-running optimisation was cancelled through its cancel flag."""

    code = "cancelled"
