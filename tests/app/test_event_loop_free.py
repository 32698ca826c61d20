"""Learning and removing a style never stalls the event loop: the next snapshot (onnx export
included) is built in the job's or a worker thread and swapped in whole.

Measured the way a client sees it: `/healthz` is polled every 50 ms from another
process while a style is learned into the bundled bank and removed again, and
while the first requests after each change run.
"""

import threading
import time

import httpx
import pytest

from model.bank import DEFAULT_BANK_DIR
from tests.app.service_helpers import encode, photo
from tests.app.test_service_jobs import content_dir, follow, stripes  # noqa: F401 - content_dir is a fixture

pytestmark = pytest.mark.slow
STALL_LIMIT_S = 0.100


class HealthPoller:
    """Polls GET /healthz every 50 ms on its own connection; keeps every latency."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=10.0)
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            assert self.client.get("/healthz").status_code == 200
            self.latencies.append(time.perf_counter() - started)
            self._stop.wait(0.05)

    def __enter__(self) -> "HealthPoller":
        self.client.get("/healthz")  # connection set up outside the measurement
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()


def test_healthz_never_stalls_while_a_style_is_learned_and_removed(server_factory, content_dir):  # noqa: F811
    server = server_factory(
        DEFAULT_BANK_DIR,
        "loop",
        backend="onnx",
        content_dir=content_dir,
        learn_steps=2,
        learn_batch_size=1,
        learn_image_size=32,
        torch_threads=1,
    )
    client = server.client
    assert client.get("/readyz").json()["backend"] == "onnx"
    image = {"image": ("p.png", encode(photo(64, 48)))}
    with HealthPoller(server.url) as poller:
        job = client.post(
            "/v1/styles", data={"name": "stripes"}, files={"style_image": ("s.png", encode(stripes()))}
        ).json()
        assert follow(client, job["id"])[-1]["status"] == "done"
        first_after_learn = client.post("/v1/stylize", params={"style": "stripes"}, files=image)
        assert first_after_learn.status_code == 200
        assert first_after_learn.headers["x-style-weights"] == "stripes:1"
        assert client.delete("/v1/styles/stripes").status_code == 204
        first_after_delete = client.post("/v1/stylize", params={"style": "stripes"}, files=image)
        assert first_after_delete.status_code == 422
        assert client.post("/v1/stylize", params={"style": "munch_the_scream"}, files=image).status_code == 200
        time.sleep(0.2)
    assert len(poller.latencies) >= 10, "the poller did not run through the changes"
    worst = max(poller.latencies)
    print(f"healthz: {len(poller.latencies)} polls, worst {worst * 1000:.1f} ms")
    assert worst < STALL_LIMIT_S, f"/healthz took {worst * 1000:.0f} ms at worst (limit 100 ms): the loop stalled"
