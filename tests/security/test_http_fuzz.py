"""Threat: an input nobody thought of (issue 13, "zero trust": the HTTP API fuzzed from its own
OpenAPI document). Schemathesis generates requests for every operation of the live
application's ``/openapi.json`` — bodies that fit the schema and bodies that break it — and
sends them over real HTTP with a valid key, another tenant's key, a viewer's key, no key, a
wrong key or a wrong scheme. Every answer must be below 500, every 4xx exactly our error
schema without a stack trace, and every answer as the document says (status, content type,
body schema; negative data refused).

Bounded and reproducible: a fixed number of examples per operation and mode, derandomized
(the same requests every run), no example database, no shrinking. Failures are collected, not
raised at the first one, so a run reports every distinct problem with a curl line to replay
it; the one-line summary (requests, operations, statuses) is printed (``-rP`` shows it).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
import schemathesis.checks
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.errors import FailureGroup

from raymlp.serving.errors import HTTP_STATUSES
from raymlp.serving.examples import example_features
from tests.security._http_app import ERROR_KEYS, KEYS, App, assert_error

#: Credentials a request is sent with (drawn per request; ``ops`` weighs most).
CREDENTIALS: dict[str, dict[str, str]] = {
    "ops": {"x-api-key": KEYS["ops"]},  # acme admin
    "alice": {"x-api-key": KEYS["alice"]},  # acme viewer
    "dev": {"authorization": f"Bearer {KEYS['dev']}"},  # acme developer
    "gina": {"x-api-key": KEYS["gina"]},  # globex developer: acme's models do not exist
    "gus": {"authorization": f"Bearer {KEYS['gus']}"},  # globex viewer
    "no key": {},
    "wrong key": {"x-api-key": "not-a-key"},
    "wrong scheme": {"authorization": f"Basic {KEYS['ops']}"},
}
WHO = ("ops", "ops", "ops", "ops", *(w for w in CREDENTIALS if w != "ops"))
#: Served models (acme, acme via the online store, globex).
SERVED = ("churn", "churn-online", "other")
#: How a positive case is steered towards the deeper code paths (negative cases never are).
STEERS = ("as generated", "served model", "valid instance")
#: Version pins of a valid instance: none, 2 (registered, not served), 1 (served), 3 (none).
PINS = (None, 2, 1, 3)
#: Generated requests per operation and mode; operations without inputs only vary the caller.
EXAMPLES = 150
EXAMPLES_NO_INPUT = 20
MIN_REQUESTS = 1000

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]


def _valid_instance(model: str, k: int) -> dict[str, Any]:
    if model == "churn-online":
        return {"entity": {"customer_id": f"c{k % 40}"}}
    return {"features": example_features(50_000 + k)}


def _steer(
    case: Any, steer: str, model: str, k: int, pin: int | None, answered: list[tuple[str, str]]
) -> None:
    """Point a positive case at a served model (with a valid instance, maybe pinned to a
    version), or at a request id this service answered: without it, generated names would
    nearly always be 404."""
    if steer == "as generated":
        return
    if "model_id" in (case.path_parameters or {}):
        case.path_parameters["model_id"] = model
        return
    body = case.body
    if not isinstance(body, dict):
        return
    if "request_id" in body:  # feedback: an id some caller really got
        if answered:
            rid, answered_model = answered[k % len(answered)]
            body["request_id"] = rid
            if steer != "served model":
                body.update(model_id=answered_model, label=k % 2)
        return
    body["model_id"] = model
    if steer != "served model":
        body.pop("version", None)
        if pin is not None:
            body["version"] = pin
        if isinstance(body.get("instances"), list):
            n = max(1, min(len(body["instances"]), 8))
            body["instances"] = [_valid_instance(model, k + i) for i in range(n)]
        else:
            body.pop("features", None)
            body.pop("entity", None)
            body.update(_valid_instance(model, k))


def _error_problem(response: Any) -> str | None:
    """Why a 4xx answer is not exactly our error schema (None: it is)."""
    text = response.text
    if "Traceback" in text:
        return "a stack trace in the body"
    if response.status_code not in HTTP_STATUSES:
        return f"status {response.status_code} is not one of the contract's {sorted(HTTP_STATUSES)}"
    try:
        body = json.loads(text)
    except ValueError:
        return f"not JSON: {text[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"error"}:
        return f"not {{'error': ...}}: {text[:200]}"
    err = body["error"]
    if not isinstance(err, dict) or set(err) != ERROR_KEYS:
        return f"error keys are not {sorted(ERROR_KEYS)}: {text[:200]}"
    if not (isinstance(err["code"], str) and err["code"] and isinstance(err["message"], str)):
        return f"code/message are not non-empty strings: {text[:200]}"
    return None


class _Fuzz:
    """Sends cases, checks answers, keeps the figures."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.session = requests.Session()
        self.statuses: Counter[int] = Counter()
        self.by_operation: Counter[str] = Counter()
        self.problems: dict[str, str] = {}  # one example per distinct problem
        self.answered: list[tuple[str, str]] = []  # (request_id, model) of 2xx predictions

    def send(self, case: Any, mode: GenerationMode, who: str) -> None:
        headers = CREDENTIALS[who]
        response = case.call(
            base_url=self.app.url, session=self.session, headers=headers, timeout=60
        )
        status = response.status_code
        self.statuses[status] += 1
        self.by_operation[case.operation.label] += 1
        where = f"{case.operation.label} [{mode.value}, {who}]"
        problems: list[str] = []
        if status >= 500:
            problems.append(f"server error {status}: {response.text[:300]}")
        elif status >= 400:
            problem = _error_problem(response)
            if problem:
                problems.append(problem)
        try:
            case.validate_response(
                response,
                checks=CHECKS,
                headers=headers,
                transport_kwargs={"base_url": self.app.url, "headers": headers},
            )
        except FailureGroup as group:
            problems.extend(f"{f.title}: {f.message[:300]}" for f in group.exceptions)
        for problem in problems:
            key = f"{where}: {problem.splitlines()[0][:120]}"
            if key not in self.problems:
                curl = case.as_curl_command(headers=headers)
                self.problems[key] = f"{where}: {problem}\n    {curl}"
        if 200 <= status < 300 and case.operation.label.startswith("POST /v1/predictions"):
            body = response.json()
            for p in body.get("predictions", [body]):
                self.answered.append((p["request_id"], p["model_id"]))

    def run(self, operation: Any, mode: GenerationMode) -> int:
        """Fuzz one operation in one mode; returns how many requests it sent."""
        has_inputs = bool(list(operation.body)) or bool(list(operation.path_parameters))
        before = sum(self.statuses.values())

        @settings(
            max_examples=EXAMPLES if has_inputs else EXAMPLES_NO_INPUT,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(
            case=operation.as_strategy(generation_mode=mode),
            who=st.sampled_from(WHO),
            steer=st.sampled_from(STEERS),
            model=st.sampled_from(SERVED),
            k=st.integers(0, 9_999),
            pin=st.sampled_from(PINS),
        )
        def fuzz(case: Any, who: str, steer: str, model: str, k: int, pin: int | None) -> None:
            if mode == GenerationMode.POSITIVE:
                _steer(case, steer, model, k, pin, self.answered)
            self.send(case, mode, who)

        try:
            fuzz()
        except Unsatisfiable:
            pass  # nothing to negate (no inputs, or a path parameter any string fits)
        return sum(self.statuses.values()) - before


@pytest.mark.slow
def test_the_http_api_survives_its_own_openapi_fuzzed(tenants_app):
    app = tenants_app
    t0 = time.perf_counter()
    schema = schemathesis.openapi.from_url(f"{app.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/predictions", "POST /v1/feedback", "GET /v1/models/{model_id}"} <= labels
    fuzz = _Fuzz(app)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for op in operations:
            fuzz.run(op, mode)
    wall = time.perf_counter() - t0
    total = sum(fuzz.statuses.values())
    print(
        f"fuzz: {total} requests, {len(fuzz.by_operation)}/{len(operations)} operations, "
        f"statuses {dict(sorted(fuzz.statuses.items()))}, {wall:.0f} s wall; "
        f"per operation {dict(fuzz.by_operation)}"
    )

    problems = "\n".join(fuzz.problems.values())
    assert not fuzz.problems, f"{len(fuzz.problems)} distinct problems:\n{problems}"
    assert total >= MIN_REQUESTS
    assert set(fuzz.by_operation) == labels  # every operation was fuzzed
    # the fuzz reached the deep paths, not only the validators: answers, refusals of every kind
    assert {200, 202, 400, 401, 403, 404, 409, 422} <= set(fuzz.statuses), fuzz.statuses
    assert not any(s >= 500 for s in fuzz.statuses)
    # and left the application as it found it: serving, its breakers closed
    assert app.predict(who="alice").status_code == 200
    detail = app.get("/v1/models/churn").json()
    assert all(b["state"] == "closed" for b in detail["breakers"].values()), detail["breakers"]
    assert_error(app.get("/v1/models/churn", who="gina"), 404, "not_found")
