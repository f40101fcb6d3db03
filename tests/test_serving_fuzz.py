"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis over hypothesis): every route
gets generated requests, those the schema allows (positive) and those it does not (negative), and every answer is
checked by schemathesis' default checks: no 5xx, only statuses, content types, headers and bodies the schema
documents, schema-valid requests accepted, invalid ones rejected. Seeded and bounded (``EXAMPLES`` per route and
mode, no deadline) so CI takes seconds; ``MDSREC_FUZZ_EXAMPLES=1000`` runs a larger one."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig

from mdsrec.serving import Recommender
from mdsrec.serving.http import ServeSettings, create_app
from tests.conftest import make_untrained_run

EXAMPLES = int(os.environ.get("MDSREC_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def api(tiny_data, tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    run = make_untrained_run("sasrec", tiny_data, Path(tmp_path_factory.mktemp("fuzz")) / "sasrec")
    limits = ServeSettings(
        max_top=50, max_history=30, max_requests=8, max_body_bytes=20_000, access_log=False
    )
    # a body over max_body_bytes is refused with 413 (documented), which schemathesis' negative-data check does not
    # count as a rejection by default
    rejections = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": rejections}}}
    )
    app = create_app(Recommender.from_run(run), limits)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_the_api_keeps_its_schema_and_never_answers_5xx(api: schemathesis.BaseSchema, mode) -> None:
    statuses: Counter[tuple[str, int]] = Counter()
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 6  # GET /health/live, /health/ready, /v1/model, /metrics, /v1/recommend; POST
    strategies = []
    for operation in operations:
        takes_input = len(operation.query) > 0 or len(operation.body) > 0
        if mode == schemathesis.GenerationMode.POSITIVE or takes_input:  # nothing to get wrong otherwise
            strategies.append(operation.as_strategy(generation_mode=mode))
        if operation.label == "GET /v1/recommend":  # also a user that exists, so that lists are made
            strategies.append(operation.as_strategy(generation_mode=mode, query={"user": "u1"}))
    for strategy in strategies:

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call_and_validate()  # raises on a 5xx or anything off the schema
            statuses[(case.operation.label, response.status_code)] += 1

        check()
    print(f"\n{mode.value}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert not [key for key in statuses if key[1] >= 500]
    assert sum(statuses.values()) >= len(operations)
