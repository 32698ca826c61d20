"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only add noise to a scrape
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cinstyle_http_requests",
            "HTTP requests by route template and status",
            ("method", "route", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "cinstyle_http_request_duration_seconds",
            "HTTP request latency",
            ("method", "route"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "cinstyle_inference_seconds",
            "time in the network per image (fast path)",
            ("kind",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "cinstyle_inference_batch_size",
            "images per network call of the fast path (above 1 when same-size requests were batched)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.in_flight = Gauge("cinstyle_inference_in_flight", "inferences running now", registry=r)
        self.in_flight_peak = Gauge(
            "cinstyle_inference_in_flight_peak",
            "most inferences ever running at once (never above the concurrency limit)",
            registry=r,
        )
        self.concurrency_limit = Gauge("cinstyle_inference_concurrency_limit", "parallel inference slots", registry=r)
        self.waiting = Gauge("cinstyle_inference_waiting", "requests waiting for an inference slot", registry=r)
        self.rejected = Counter(
            "cinstyle_inference_rejected", "requests refused with 503 (too many waiting)", registry=r
        )
        self.jobs_queued = Gauge("cinstyle_jobs_queued", "jobs waiting for a worker", registry=r)
        self.jobs_running = Gauge("cinstyle_jobs_running", "jobs running now", registry=r)
        self.jobs_finished = Counter(
            "cinstyle_jobs_finished", "finished jobs by kind and final status", ("kind", "status"), registry=r
        )
        self.job_seconds = Histogram(
            "cinstyle_job_seconds",
            "job run time",
            ("kind",),
            buckets=_LATENCY_BUCKETS + (300.0, 600.0, 1800.0),
            registry=r,
        )
        self.styles = Gauge("cinstyle_styles", "styles in the bank", ("kind",), registry=r)
        self.jobs_rejected = Counter(
            "cinstyle_jobs_rejected", "job submissions refused with 429 (queue full)", registry=r
        )
        self.redis_up = Gauge(
            "cinstyle_redis_up", "1 while Redis answers (fleet mode; absent in embedded mode)", registry=r
        )
        self.bank_version = Gauge(
            "cinstyle_bank_version", "version of the learned-style store the bank serves", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
