"""Fixtures for the service tests: a tiny bank and real servers on 127.0.0.1."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.service_helpers import Server, make_tiny_bank, start_server


@pytest.fixture(scope="session")
def tiny_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bank(tmp_path_factory.mktemp("bank") / "tiny")


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start servers inside a module; all are stopped when it ends."""
    started: list[Server] = []

    def factory(checkpoint: Path, name: str = "server", **settings: object) -> Server:
        server = start_server(tmp_path_factory, checkpoint, name, **settings)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
