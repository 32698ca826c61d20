"""Shared dependencies as `Annotated` aliases: the service, its parts, and the API key check."""

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from app.errors import AuthenticationError
from app.live_bank import LiveBank
from app.metrics import Metrics
from app.service import Service
from app.settings import Settings


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_registry(service: Annotated[Service, Depends(get_service)]) -> LiveBank:
    """The loaded bank, or 503 while it loads (or if it could not be loaded)."""
    return service.require_registry()


def require_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    x_api_key: Annotated[str | None, Header(description="the API key (or send Authorization: Bearer KEY)")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """When CINSTYLE_API_KEY is set, changing the bank needs it (X-API-Key or Authorization: Bearer)."""
    expected = settings.api_key
    if expected is None:
        return
    given = x_api_key
    if given is None and authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if given is None:
        raise AuthenticationError(
            "this endpoint changes the style bank and needs an API key: "
            "send it as X-API-Key: KEY or Authorization: Bearer KEY"
        )
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise AuthenticationError("the API key is wrong")


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[LiveBank, Depends(get_registry)]
ApiKey = Depends(require_api_key)
