"""A bounded schemathesis run against a real server: the OpenAPI schema tells the truth.

`schemathesis run` (its CLI, in a subprocess) generates requests from the served
schema -- examples, coverage, fuzzing and stateful (job id) phases, valid and
invalid data, fixed seed -- and fails on:

* any 5xx (``not_a_server_error``);
* an answer the schema does not document: status code, content type, headers,
  body (``status_code_conformance``, ``content_type_conformance``,
  ``response_headers_conformance``, ``response_schema_conformance``);
* invalid data accepted (``negative_data_rejection``), and 405 answers without a
  complete ``Allow`` (``unsupported_method``, ``allow_header_conformance``);
* a request valid by the schema rejected (`schema_valid_request_accepted` below,
  in place of schemathesis' ``positive_data_acceptance``).

The one place this differs from schemathesis' defaults: its own acceptance check
allows only 2xx, 401, 403, 404, 409 and 429 for valid data. Our schema cannot
state everything: whether the bytes of a file are an image, which styles exist,
that weights are not all zero or a name not given twice, that exactly one of
``style`` (query) and ``style_image`` (body) is sent. Our check therefore allows
exactly those answers -- by status *and* error code -- and nothing else: a 422
``invalid_parameter`` for a schema-valid request (a rule missing from the schema)
still fails. No operation is excluded; jobs are cheap with the settings below.
One finding is dropped, precisely: ``use_after_free`` after ``DELETE /v1/jobs/ID``,
which cancels a job (documented) -- the job stays readable, as ``cancelled``, until
it expires. (``use_after_free`` still applies to ``DELETE /v1/styles/NAME``.)

This module is also the run's hooks module (``SCHEMATHESIS_HOOKS``): imported
there, it registers the check and a hook that puts real images in place of some
generated file contents, so that valid requests reach the network and the jobs
(random bytes are never an image) and the stateful phase follows real job ids.
"""

import os
import re
import subprocess
import sys
import time

import pytest

from tests.app.service_helpers import REPO, Server, encode, photo

SEED = 14
MAX_EXAMPLES = 15  # per operation and phase; about 300-450 requests in all
SETTINGS = dict(
    slow_steps=1,
    learn_steps=1,
    learn_image_size=32,
    learn_batch_size=1,
    slow_max_side=64,
    max_output_side=256,
    max_wait_s=10,
    queue_size=8,
)

# Errors a schema-valid request may get, by status: the code says why, and each is something the schema cannot say.
ACCEPTABLE_REJECTIONS = {
    400: {"invalid_image"},  # the file's bytes are not a decodable image of at least 16 x 16 px
    404: {"not_found"},  # no such job or style (yet, or any more)
    409: {"conflict"},  # a style name taken or built in; a job's result not ready
    413: {"image_too_large"},  # more pixels than CINSTYLE_MAX_PIXELS
    422: {"unknown_style", "invalid_style_weights"},  # a name not in the bank; weights all zero or a name twice
    429: {"queue_full"},
    503: {"overloaded"},
}


def _error_code(response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _style_choice_broken(case) -> bool:
    """POST /v1/stylize with both or neither of ``style`` and ``style_image`` (a 422 the schema cannot state)."""
    if case.operation.path != "/v1/stylize":
        return False
    body = case.body if isinstance(case.body, dict) else {}
    return ("style" in (case.query or {})) == ("style_image" in body)


def schema_valid_request_accepted(ctx, response, case) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return None
    status, code = response.status_code, _error_code(response)
    if status >= 500:
        return None  # not_a_server_error reports it
    if code in ACCEPTABLE_REJECTIONS.get(status, ()):
        return None
    if status == 422 and code == "invalid_parameter" and _style_choice_broken(case):
        return None
    raise AssertionError(f"a request valid by the schema was rejected: {status} {response.text[:500]}")


def cancelled_job_still_readable(context, failure, case, response) -> bool:
    """False (drop it) for use_after_free after a cancel: DELETE /v1/jobs/ID cancels, the job stays readable."""
    return not (failure.code == "ST301" and str(getattr(failure, "free", "")).startswith("DELETE /v1/jobs/"))


def _images() -> list[bytes]:
    return [encode(photo(40, 32, seed=1)), encode(photo(24, 24, seed=2), "JPEG"), encode(photo(32, 20, seed=3))]


def _register_hooks() -> None:
    import schemathesis
    from hypothesis import strategies as st

    schemathesis.check(schema_valid_request_accepted)
    schemathesis.hook("filter_failure")(cancelled_job_still_readable)
    images = _images()

    @schemathesis.hook
    def flatmap_body(context, body):
        files = [
            name
            for name in ("image", "style_image")
            if isinstance(body, dict) and name in body and not isinstance(body[name], int | float | bool)
        ]
        if not files:
            return st.just(body)
        return st.one_of(
            st.just(body),
            st.tuples(*(st.sampled_from(images) for _ in files)).map(
                lambda chosen: {**body, **dict(zip(files, chosen, strict=True))}
            ),
        )


if os.environ.get("SCHEMATHESIS_HOOKS") == __name__:
    _register_hooks()


# -- the test ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(server_factory, tiny_bank, tmp_path_factory) -> Server:
    content = tmp_path_factory.mktemp("fuzz_content")
    for seed in range(2):
        photo(48, 48, seed=seed).save(content / f"photo{seed}.png")
    return server_factory(tiny_bank, "fuzz", content_dir=content, **SETTINGS)


@pytest.mark.slow
def test_schemathesis_finds_nothing(server, tmp_path):
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": __name__,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
    }
    started = time.monotonic()
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, (
        f"schemathesis found problems (exit {run.returncode}):\n{output[-20000:]}\n--- server log ---\n{server.log()}"
    )
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) >= 200, output[-3000:]
    print(f"schemathesis: {generated.group(0)} in {took:.1f} s", file=sys.stderr)
    assert server.client.get("/healthz").status_code == 200
