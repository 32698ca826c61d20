"""The app factory: settings, lifespan (load the bank once), middleware, error handlers, routers.

Nothing else lives here. ``create_app(settings, bank)`` takes an already
loaded bank so tests can hand in a tiny one.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.api.errors import install_error_handlers
from app.api.middleware import BodyLimitMiddleware, MetricsMiddleware, PageSecurityMiddleware
from app.api.routes import health, jobs, metrics, styles, stylize, textures, web
from app.metrics import Metrics
from app.service import Service
from app.settings import Settings
from model.bank import StyleBank

DESCRIPTION = """Multi-style neural style transfer: one conditional-instance-norm network holds every style;
blend them with weights; paintings the bank has never seen go through the slow Gram optimisation (a job) and can be
learned into the bank; `POST /v1/textures` synthesizes a new texture from a painting alone.

Errors are JSON: `{"error": {"code": "...", "message": "..."}}`."""


def create_app(settings: Settings | None = None, bank: StyleBank | None = None) -> FastAPI:
    settings = settings or Settings()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings, app_metrics)
        app.state.service = service
        await service.start(bank)
        try:
            yield
        finally:
            await service.stop()

    # /docs and /redoc with Swagger UI's and ReDoc's files served from the fastapi-offline package: no CDN.
    app = FastAPIOffline(
        title="cinstyle",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url="/docs-assets",
        swagger_ui_parameters={"validatorUrl": None},  # never ask validator.swagger.io about our schema
    )
    app.state.settings = settings
    app.state.metrics = app_metrics
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app_metrics)
    app.add_middleware(PageSecurityMiddleware)
    install_error_handlers(app)
    routers = (
        health.router,
        styles.router,
        stylize.build_router(settings),
        textures.build_router(settings),
        jobs.router,
        metrics.router,
    )
    for router in routers:
        app.include_router(router)  # the stylize and textures routes state the bounds these settings set
    web.mount(app)
    return app
