"""The OpenAPI contract: /openapi.json describes every route, the schemas are the validators, and
schemathesis fuzzes every operation of the real app (fixed seed, bounded examples): no 5xx and no
answer outside the document (status, content type, body schema, headers)."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, seed, settings

API_KEY = "contract-key"
EXAMPLES = 300          # per operation and generation mode


STATUSES: dict[str, list[int]] = {}


@pytest.fixture(scope="module")
def contract_app(world_factory, gbdt_trainer):
    """One app for the whole schemathesis run, on a world of its own (the fuzzed events and
    impressions would change what later tests train on): the API key on, a GBDT model active
    (the scoring path is fuzzed, not only the popularity fallback)."""
    world = world_factory("contract-world")
    from api import close_app, create_app
    from store.registry import list_models, promote, register_model, reject
    _, path = gbdt_trainer(world)
    register_model(world.database_url, "gbdt", "contract", str(path), metrics={"auc": 0.5})
    promote(world.database_url, "gbdt", "contract")
    app = create_app(world.with_(api_key=API_KEY))
    app.config.update({"TESTING": True, "SNAPSHOT_BACKGROUND": False, "MODEL_CHECK_S": 0.0, "READY_TIMEOUT_S": 60.0})
    yield app
    close_app(app)
    for m in list_models(world.database_url, "gbdt"):
        reject(world.database_url, "gbdt", m["version"])


def test_the_document_lists_every_route_with_its_schemas(make_app):
    app = make_app()
    doc = app.test_client().get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    rules = {(r.rule, m) for r in app.url_map.iter_rules() for m in r.methods - {"HEAD", "OPTIONS"}
             if r.endpoint.split(".")[0] not in ("static", "openapi")}
    documented = {(path, m.upper()) for path, ops in doc["paths"].items() for m in ops}
    assert documented == rules
    schemas = doc["components"]["schemas"]
    req = schemas["RecommendRequest"]
    assert req["required"] == ["user_id"] and req["additionalProperties"] is False
    assert req["properties"]["k"]["maximum"] == 200
    event = schemas["Event"]
    from store.ingest import EVENT_FIELDS
    assert list(event["properties"]) == [f.name for f in EVENT_FIELDS]        # generated from the validator's table
    assert sorted(event["required"]) == sorted(f.name for f in EVENT_FIELDS if f.required)
    ops = doc["paths"]["/v1/recommend"]["post"]
    assert ops["security"] == [{"api_key": []}] and {"200", "400", "401", "413", "415"} <= set(ops["responses"])
    assert doc["components"]["securitySchemes"]["api_key"] == {"type": "apiKey", "name": "X-API-Key", "in": "header"}


def test_the_docs_page_points_at_the_document(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.mimetype == "text/html" and "/openapi.json" in r.get_data(as_text=True)


def test_a_schema_limit_is_enforced_as_documented(client):
    doc = client.get("/openapi.json").get_json()
    top = doc["components"]["schemas"]["RecommendRequest"]["properties"]["k"]["maximum"]
    ok = client.post("/v1/recommend", json={"user_id": 1, "k": top})
    over = client.post("/v1/recommend", json={"user_id": 1, "k": top + 1})
    assert ok.status_code == 200 and over.status_code == 400
    assert over.get_json()["error"] == "invalid_field" and "k" in over.get_json()["detail"]


# (schemathesis' own pytest plugin, schemathesis.pytest.from_fixture, fails on pytest 9: it sets
# the removed Node._nodeid; each operation is driven with hypothesis directly instead)
OPERATIONS = ["GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/models", "POST /v1/recommend",
              "POST /v1/events"]


@pytest.fixture(scope="module")
def contract_schema(contract_app):
    return schemathesis.openapi.from_wsgi("/openapi.json", contract_app)


def test_the_fuzzed_operations_are_every_documented_one(contract_schema):
    ops = sorted(f"{r.ok().method.upper()} {r.ok().path}" for r in contract_schema.get_all_operations())
    assert ops == sorted(OPERATIONS)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_operation_honours_the_contract(contract_schema, operation):
    """Positive and negative cases (and the schema's examples) through the real app: every check
    schemathesis has, except ``positive_data_acceptance``: it expects a 2xx for any body the
    schema allows, but an event naming a stream that is not in the catalog is valid
    JSON-schema-wise and must still be refused (400 with the row)."""
    from hypothesis import given, strategies as st
    from schemathesis.specs.openapi.checks import positive_data_acceptance
    method, path = operation.split(" ")
    op = contract_schema[path][method]
    codes = STATUSES.setdefault(operation, [])
    has_inputs = bool(list(op.body) or list(op.query))
    modes = [schemathesis.GenerationMode.POSITIVE] + ([schemathesis.GenerationMode.NEGATIVE] if has_inputs else [])
    for mode in modes:            # (an operation without inputs has no negative case)
        strategy = op.as_strategy(generation_mode=mode)
        if mode is schemathesis.GenerationMode.POSITIVE:
            strategy = st.one_of(contract_schema.get_strategies_from_examples(op) + [strategy])

        @given(case=strategy)
        @seed(20261202)
        @settings(max_examples=EXAMPLES // 2, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case):
            # the generated key is replaced by the real one; a negative case that drops the header
            # is sent without it (and must get its 401)
            if case.headers and "X-API-Key" in case.headers:
                case.headers["X-API-Key"] = API_KEY
            r = case.call_and_validate(excluded_checks=[positive_data_acceptance])
            codes.append(r.status_code)

        run()


def test_the_contract_run_reached_every_operation_and_its_answers():
    """Not only 4xx: every operation answered 200 at least once (the schema's examples are valid
    requests) and the write routes refused bad ones."""
    assert len(STATUSES) == 6, sorted(STATUSES)
    for op, codes in STATUSES.items():
        assert 200 in codes, (op, sorted(set(codes)))
        assert max(codes) < 500, (op, sorted(set(codes)))
    for op in ("POST /v1/recommend", "POST /v1/events"):
        assert len(STATUSES[op]) >= EXAMPLES and 400 in STATUSES[op], (op, sorted(set(STATUSES[op])))
