"""Fleet mode against a real redis-server: two API replicas, two `cinstyle worker`s, one Redis.

Shows what the fleet promises: a style learned through replica A is served by name
through replica B within 2 s of its job finishing; a slow-path job submitted to A is
polled, fetched and cancelled through B; a worker killed with SIGKILL mid-job leaves
a clear failure within the configured time (never `running` forever); the queue
bound holds on both replicas; a style deleted through B is gone on A; learned styles
survive a restart of Redis (AOF) and the replicas recover by themselves.
"""

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.app.redis_helpers import RedisServer, Worker
from tests.app.service_helpers import Server, encode, error_of, photo
from tests.app.test_service_jobs import content_dir, follow, stripes  # noqa: F401 - content_dir is a fixture

pytestmark = pytest.mark.slow

FLEET = dict(
    learn_steps=2,
    learn_batch_size=1,
    learn_image_size=32,
    slow_steps=2,
    slow_max_side=64,
    max_output_side=256,
    queue_size=2,
    job_lost_s=4,
    job_heartbeat_s=1,
    result_ttl_s=600,
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tiny_bank, content_dir):  # noqa: F811
    root = tmp_path_factory.mktemp("fleet")
    redis_server = RedisServer(root / "redis").start()
    started: list = []
    try:
        workers = [
            Worker(
                tiny_bank,
                redis_server.url,
                root / f"worker{i}.log",
                content_dir=content_dir,
                **{**FLEET, "slow_steps": 400, "slow_time_limit_s": 60},
            ).start()
            for i in range(2)
        ]
        started += workers
        replicas = [
            Server(
                tiny_bank,
                root / f"data{i}",
                root / f"api{i}.log",
                redis_url=redis_server.url,
                content_dir=content_dir,
                **FLEET,
            ).start()
            for i in range(2)
        ]
        started += replicas
        for worker in workers:
            worker.wait_ready()
        yield redis_server, replicas, workers
    finally:
        for process in started:
            process.stop()
        redis_server.stop()


def wait_until(condition, timeout_s: float, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    return None


def slow_submit(client: httpx.Client, **params) -> httpx.Response:
    return client.post(
        "/v1/stylize",
        params=params,
        files={"image": ("p.png", encode(photo(48, 32))), "style_image": ("s.png", encode(stripes(48)))},
    )


def test_readyz_and_metrics_report_redis_and_the_queue(fleet):
    _, (a, b), _ = fleet
    ready = a.client.get("/readyz").json()
    assert ready["mode"] == "fleet" and ready["redis"] == "up" and set(ready["jobs"]) >= {"queued", "running"}
    metrics = b.client.get("/metrics").text
    assert "cinstyle_redis_up 1.0" in metrics and "cinstyle_jobs_queued" in metrics


def test_a_style_learned_through_a_is_served_by_b_within_2_s_and_deleted_everywhere(fleet):
    _, (a, b), _ = fleet
    job = a.client.post(
        "/v1/styles", data={"name": "fleet_stripes"}, files={"style_image": ("s.png", encode(stripes()))}
    )
    assert job.status_code == 202, job.text
    states = follow(b.client, job.json()["id"])  # polled through the other replica
    assert states[-1]["status"] == "done", states[-1]
    done_at = time.monotonic()
    image = {"image": ("p.png", encode(photo()))}

    def served_by_b():
        return b.client.post("/v1/stylize", params={"style": "fleet_stripes"}, files=image).status_code == 200

    assert wait_until(served_by_b, 2.0), "replica B did not serve the style learned through A within 2 s"
    print(f"learned style served by the other replica {time.monotonic() - done_at:.2f} s after its job ended")

    def listed_by_a():
        styles = {s["name"]: s["kind"] for s in a.client.get("/v1/styles").json()["styles"]}
        return styles.get("fleet_stripes") == "learned"

    assert wait_until(listed_by_a, 2.0), "replica A did not list the learned style within 2 s"
    # the same name cannot be learned twice, through either replica
    again = b.client.post(
        "/v1/styles", data={"name": "fleet_stripes"}, files={"style_image": ("s.png", encode(stripes()))}
    )
    assert again.status_code == 409

    assert b.client.delete("/v1/styles/fleet_stripes").status_code == 204
    gone = wait_until(
        lambda: a.client.post("/v1/stylize", params={"style": "fleet_stripes"}, files=image).status_code == 422, 2.0
    )
    assert gone, "replica A still served the style deleted through B after 2 s"


def test_a_slow_job_submitted_to_a_is_polled_and_fetched_through_b(fleet):
    _, (a, b), _ = fleet
    submitted = slow_submit(a.client, format="png")
    assert submitted.status_code == 202 and submitted.headers["location"].startswith("/v1/jobs/")
    job_id = submitted.json()["id"]
    states = follow(b.client, job_id)
    assert states[-1]["status"] == "done" and states[-1]["progress"] == 1.0, states[-1]
    result = b.client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert result.content.startswith(b"\x89PNG")
    assert a.client.get(f"/v1/jobs/{job_id}/result").content == result.content


def test_cancel_through_b_reaches_the_worker_running_the_job_from_a(fleet):
    _, (a, b), _ = fleet
    job_id = slow_submit(a.client).json()["id"]
    assert wait_until(lambda: b.client.get(f"/v1/jobs/{job_id}").json()["status"] == "running", 30)
    cancelled = b.client.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200
    final = follow(a.client, job_id, timeout_s=30)[-1]
    assert final["status"] == "cancelled", final
    assert a.client.get(f"/v1/jobs/{job_id}/result").status_code == 409


def test_the_queue_bound_holds_on_both_replicas(fleet):
    redis_server, (a, b), _ = fleet
    ids = []
    try:
        # two workers busy with long jobs, then queue_size (2) queued: the next submission is refused everywhere
        for client in (a.client, b.client, a.client, b.client):
            response = slow_submit(client)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
            if len(ids) == 2:
                assert wait_until(
                    lambda: sum(b.client.get(f"/v1/jobs/{i}").json()["status"] == "running" for i in ids) == 2, 30
                )
        for client in (a.client, b.client):
            refused = slow_submit(client)
            assert refused.status_code == 429 and error_of(refused)["code"] == "queue_full"
            assert int(refused.headers["retry-after"]) >= 1
    finally:
        for job_id in ids:
            a.client.delete(f"/v1/jobs/{job_id}")
    for job_id in ids:
        assert follow(b.client, job_id, timeout_s=30)[-1]["status"] == "cancelled"


def test_a_worker_killed_mid_job_leaves_a_clear_failure_not_a_running_job(fleet):
    redis_server, (a, b), workers = fleet
    job_id = slow_submit(a.client).json()["id"]
    assert wait_until(lambda: b.client.get(f"/v1/jobs/{job_id}").json()["status"] == "running", 30)
    owner = json.loads(redis_server.client().hget(f"cinstyle:job:{job_id}", "worker"))
    victim = next(w for w in workers if owner.endswith(f":{w.pid}"))
    os.kill(victim.pid, signal.SIGKILL)
    victim.process.wait(10)
    killed_at = time.monotonic()
    final = follow(b.client, job_id, timeout_s=30)[-1]
    assert final["status"] == "failed" and "worker" in final["error"] and "submit it again" in final["error"]
    assert time.monotonic() - killed_at < FLEET["job_lost_s"] + 5
    # the other worker still runs jobs
    states = follow(a.client, slow_submit(b.client, format="png").json()["id"], timeout_s=60)
    assert states[-1]["status"] == "done"


def test_learned_styles_survive_a_redis_restart_and_replicas_recover(fleet, tmp_path):
    redis_server, (a, b), _ = fleet
    job = a.client.post("/v1/styles", data={"name": "kept"}, files={"style_image": ("s.png", encode(stripes()))})
    assert follow(a.client, job.json()["id"])[-1]["status"] == "done"
    image = {"image": ("p.png", encode(photo()))}
    assert wait_until(
        lambda: a.client.post("/v1/stylize", params={"style": "kept"}, files=image).status_code == 200, 2.0
    )
    redis_server.stop()
    down = wait_until(lambda: a.client.get("/readyz").status_code == 503, 10)
    assert down, "readyz did not notice that Redis is gone"
    assert error_of(a.client.get("/readyz"))["code"] in ("not_ready", "redis_unavailable")
    job_route = b.client.get(f"/v1/jobs/{job.json()['id']}")
    assert job_route.status_code == 503 and "Redis" in error_of(job_route)["message"]
    # the fast path keeps serving the styles it has
    assert a.client.post("/v1/stylize", params={"style": "kept"}, files=image).status_code == 200
    redis_server.start()  # same dir and port: the AOF brings the styles back
    assert wait_until(
        lambda: a.client.get("/readyz").status_code == 200 and b.client.get("/readyz").status_code == 200, 15
    )
    names = [s["name"] for s in b.client.get("/v1/styles").json()["styles"]]
    assert "kept" in names
    assert json.loads(redis_server.client().hget("cinstyle:job:" + job.json()["id"], "status")) == "done"
    assert Path(redis_server.folder).exists()


def test_a_texture_job_submitted_to_a_runs_on_a_worker_and_is_fetched_through_b(fleet):
    _, (a, b), _ = fleet
    submitted = a.client.post(
        "/v1/textures",
        params={"width": 32, "height": 24, "layers": "relu2_1", "tileable": "true", "seed": 3},
        files={"style_image": ("s.png", encode(stripes(48)))},
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    states = follow(b.client, job_id)
    assert states[-1]["status"] == "done" and states[-1]["kind"] == "texture", states[-1]
    result = b.client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert result.content.startswith(b"\x89PNG") and a.client.get(f"/v1/jobs/{job_id}/result").content == result.content
