"""Fuzz every operation of the OpenAPI schema against the real server: never a 5xx.

Schemathesis generates requests from the schema, valid ones (positive) and
invalid ones (negative), a bounded number per operation so this stays fast;
any answer of 500 or more fails. (Schemathesis' pytest plugin does not work
with pytest 9, so its strategies are driven by Hypothesis directly.)
"""

from __future__ import annotations

from pathlib import Path

import httpx
import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis import GenerationMode

import replay
from replay.remote.chunks import MEDIA_TYPE
from service.tools.process import ServerProcess

EXAMPLES = 20
INSERT = "insert"  # the tag of the recording routes (service.routers.insert)
# chunk bodies are bytes: generated as application/octet-stream ones
schemathesis.serializer.alias(MEDIA_TYPE, "application/octet-stream")


@pytest.fixture(scope="module")
def operations(server: ServerProcess) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 9
    # the recording routes write races: fuzzed on a store of their own (below)
    return [op for op in ops if INSERT not in (schema.get_tags(op) or [])]


def fuzz(strategy: object, label: str, seen: dict[str, set[int]]) -> None:
    """Send `EXAMPLES` generated requests; record their statuses under `label`."""

    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(timeout=30)
        seen.setdefault(label, set()).add(response.status_code)
        assert response.status_code < 500, (case.as_curl_command(), response.text[:500])

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(
    operations: list[schemathesis.APIOperation], served_store: Path, mode: GenerationMode
) -> None:
    real_race = {"race_id": replay.open_store(served_store, mode="r").race_ids()[0]}
    runs: list[tuple[schemathesis.APIOperation, dict[str, str] | None]] = [
        (op, None) for op in operations
    ]
    # and once more on a real race, so steps and frames are not all 404s
    runs += [(op, real_race) for op in operations if "{race_id}" in op.path]
    seen: dict[str, set[int]] = {}
    for operation, path_parameters in runs:
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
        label = operation.label + (" (real race)" if path_parameters else "")

        try:
            fuzz(strategy, label, seen)
        except hypothesis.errors.Unsatisfiable:  # nothing invalid to send (no parameters)
            assert mode == GenerationMode.NEGATIVE
    print(mode, seen)
    if mode == GenerationMode.POSITIVE:
        assert len(seen) == len(runs)
        assert 200 in seen["GET /v1/races/{race_id}/frames/{step} (real race)"]
    else:
        assert {"POST /v1/sample", "GET /v1/races", "PUT /v1/priorities"} <= set(seen)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_recording_routes_never_answer_5xx(tmp_path: Path, mode: GenerationMode) -> None:
    """On a store of their own: generated races are created, chunks refused, races closed."""
    replay.open_store(tmp_path / "s")
    with ServerProcess(tmp_path / "s") as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        ops = [r.ok() for r in schema.get_all_operations()]
        ops = [op for op in ops if INSERT in (schema.get_tags(op) or [])]
        assert len(ops) == 3
        created = httpx.post(f"{server.url}/v1/races", json={"env": "x"}, timeout=30)
        race = {"race_id": created.json()["race_id"]}  # recording: the fuzzed chunks' race
        seen: dict[str, set[int]] = {}
        for op in ops:
            path_parameters = race if "{race_id}" in op.path else None
            strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters)
            try:
                fuzz(strategy, op.label, seen)
            except hypothesis.errors.Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE
    if mode == GenerationMode.POSITIVE:
        assert 201 in seen["POST /v1/races"]
