"""The service's own errors, beside the domain ones in `model.errors`.

All are `CinstyleError`s with a short ``code``; `app.api.errors` maps every
class to its HTTP status and the SPEC's JSON body in one table.
"""

from model.errors import CinstyleError


class NotReadyError(CinstyleError):
    """The model is not loaded (yet, or it failed to load)."""

    code = "not_ready"


class OverloadedError(CinstyleError):
    """Too many requests are already waiting for an inference slot."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFullError(CinstyleError):
    """The job queue holds ``queue_size`` jobs already."""

    code = "queue_full"

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthenticationError(CinstyleError):
    """Missing or wrong API key on an endpoint that changes the bank."""

    code = "unauthorized"


class NotFoundError(CinstyleError):
    """A job or style that does not exist (or has expired)."""

    code = "not_found"


class ConflictError(CinstyleError):
    """The resource is in the wrong state: a result not ready, a name taken, a built-in style."""

    code = "conflict"


class NotAcceptableError(CinstyleError):
    """The Accept header names no image format we can produce."""

    code = "not_acceptable"


class ClientGoneError(CinstyleError):
    """The client disconnected before its queued work started (nobody is there to answer)."""

    code = "client_closed_request"
