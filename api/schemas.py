"""The API's request and answer schemas (pydantic v2): the one definition that both validates the
requests and documents them (api.openapi builds ``GET /openapi.json`` from these classes).

Requests are validated with :func:`parse` in strict mode (a boolean is not an integer, ``3.0`` is
not an id, ``"5"`` is not a number) and unknown fields are refused; a failure is a 400 in the
API's JSON error shape, never pydantic's. The body itself is parsed by :func:`api.errors.json_body`
first (strict JSON: no NaN, no repeated keys, bounded size), which a framework's lenient parser
would not do. Events are validated row by row by ``store.ingest.validate_events`` (shared with the
bulk loaders); their schema here is generated from the same field table, ``store.ingest.EVENT_FIELDS``.

Answer models are documentation and the contract that the schemathesis test checks every answer
against (tests/api/test_openapi.py); they allow extra keys so that adding a field is not a
breaking change.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ApiError, json_type, text_problem

INT64_MAX = 2 ** 63 - 1
MAX_K = 200
MAX_CANDIDATES = 1000
MAX_EVENTS = 1000
DEFAULT_K = 20
DEFAULT_PAGE = "live_tab"
PAGE_MAX_LEN = 32          # store.schema: events.page String(32)


def _storable_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _unique(values: Optional[list]) -> Optional[list]:
    if values is not None and len(set(values)) != len(values):
        seen, dups = set(), []
        for v in values:
            if v in seen and v not in dups:
                dups.append(v)
            seen.add(v)
        raise ValueError(f"must be unique; repeated: {dups[:20]}")
    return values


Id = Annotated[int, Field(ge=0, le=INT64_MAX)]
Text = Annotated[str, AfterValidator(_storable_text)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


# ----------------------------------------------------------------------------- requests
class RecommendRequest(_Request):
    """Rank live streams for one user."""
    model_config = ConfigDict(json_schema_extra={"examples": [{"user_id": 1, "k": 10, "page": "live_tab"}]})
    user_id: Id = Field(description="the user; an unknown one is a cold start, not an error")
    candidates: Optional[Annotated[list[Id], AfterValidator(_unique)]] = Field(
        None, min_length=1, max_length=MAX_CANDIDATES,
        description="stream ids to rank (unique, in the catalog); default: the streams live now "
                    f"(the {MAX_CANDIDATES} most popular when more are live)")
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description="how many to return")
    page: Annotated[Text, Field(min_length=1, max_length=PAGE_MAX_LEN)] = Field(
        DEFAULT_PAGE, description="the page asking; its objective weights fuse the ranker's tasks")


class ModelsQuery(_Request):
    name: Annotated[Text, Field(min_length=1, max_length=64)] = Field(
        None, description="only this model name (gbdt, ranker, graph, ...)")      # (absent: every name)


def _event_model() -> type[BaseModel]:
    """``Event`` from store.ingest.EVENT_FIELDS (the validator of every write path)."""
    from store.ingest import EVENT_FIELDS
    fields: dict[str, Any] = {}
    for f in EVENT_FIELDS:
        if f.kind == "int":
            typ: Any = Annotated[int, Field(ge=int(f.minimum), le=int(f.maximum))]
        elif f.kind == "float":
            typ = Annotated[float, Field(gt=f.minimum, le=f.maximum) if f.above_minimum
                            else Field(ge=f.minimum, le=f.maximum)]
        elif f.kind == "ts":
            typ = Union[Annotated[str, Field(json_schema_extra={"format": "date-time"})],
                        Annotated[float, Field(ge=0)]]
        elif f.name == "type":
            from store.schema import EVENT_TYPES
            typ = Literal[EVENT_TYPES]
        else:      # an integer id is taken as its decimal text (store.ingest._str_column)
            typ = Union[Annotated[str, Field(min_length=1, max_length=f.max_len)], int]
        fields[f.name] = (typ if f.required else Optional[typ],
                          Field(... if f.required else None, description=f.doc))
    return create_model("Event", __config__=ConfigDict(extra="forbid"), **fields)


Event = _event_model()


class EventBatch(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"events": [
        {"event_id": "e-1", "user_id": 1, "ts": "2026-12-01T13:05:00Z", "type": "click", "stream_id": 1,
         "request_id": "r-1", "position": 1, "page": "live_tab"},
        {"event_id": "e-2", "user_id": 1, "ts": "2026-12-01T13:09:00Z", "type": "watch", "stream_id": 1,
         "value": 240.0}]}]})
    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS,  # type: ignore[valid-type]
                                description="validated and written in ONE transaction: one bad row "
                                            "and nothing is written (400 with every bad row)")


# ----------------------------------------------------------------------------- answers
class ErrorBody(_Answer):
    """Every 4xx / 5xx answer (extra keys: ``errors`` of a rejected batch, ``checks`` of /readyz, ...)."""
    error: str = Field(description="short machine-readable code, e.g. invalid_field")
    detail: str = Field(description="what is wrong, for a human")


class ModelRef(_Answer):
    name: str = Field(description="ranker, gbdt or popularity")
    version: Optional[str] = None
    graph_version: Optional[str] = Field(None, description="the ranker's Metapath2vec vectors: the active graph "
                                                           "version (a ranker trained with them)")
    fallback: Optional[bool] = Field(None, description="true when no model could score (popularity order)")
    reason: Optional[str] = Field(None, description="why the fallback")
    degraded: Optional[str] = Field(None, description="serving an older version, V1 or popularity because a part "
                                                      "is failing")


class RankedItem(_Answer):
    stream_id: int
    score: Optional[float]
    position: int = Field(ge=1, description="1 = top")
    source: Optional[Literal["repeat", "ann", "popular"]] = Field(
        None, description="the retrieval channel that brought it (when the candidates were retrieved)")
    policy: Optional[Literal["explore", "randomised"]] = Field(
        None, description="absent: the ranked order; explore: a cold stream's Thompson slot; randomised: "
                          "the top-K order was permuted on this request")
    propensity: Optional[float] = Field(None, gt=0, le=1, description="P(this stream at this slot) when below 1")


class Impressions(_Answer):
    journaled: bool
    count: Optional[int] = None
    dropped: Optional[int] = None
    reason: Optional[str] = None


class RecommendAnswer(_Answer):
    request_id: str
    user_id: int
    page: str
    model: ModelRef
    items: list[RankedItem]
    impressions: Optional[Impressions] = Field(None, description="the answer's items as logged impression events")
    retrieval: Optional[dict] = Field(None, description="{version, candidates}: the two-tower that retrieved them")
    rerank: Optional[dict] = Field(None, description="{slot_value: slate_model | scores, relaxed}: the page re-ranker "
                                   "ordered the top slots (relaxed: the candidates could not meet the diversity rules)")
    reason: Optional[str] = None


class EventsAnswer(_Answer):
    received: int
    inserted: int
    duplicates: int = Field(description="event ids already in the log (no-ops)")
    push_enqueued: bool = Field(description="the real-time push was handed to the broker")
    push_detail: Optional[str] = None


class ModelVersion(_Answer):
    name: str
    version: str
    status: str
    metrics: Optional[dict] = None


class ModelsAnswer(_Answer):
    models: list[ModelVersion] = Field(description="newest first")
    active: dict[str, str] = Field(description="the active version of each name")


class Health(_Answer):
    status: Literal["ok"]


class Ready(_Answer):
    status: Literal["ready"]
    checks: dict[str, dict]


# ----------------------------------------------------------------------------- validation
def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def parse(model: type[BaseModel], data: Any) -> BaseModel:
    """``model`` validated from ``data``, or a 400 ApiError in the API's shape: ``missing_field``,
    ``unknown_field`` or ``invalid_field`` (the first problem in the detail, all in ``errors``)."""
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", f"the body must be a JSON object, got {json_type(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_context=False)
    first = problems[0]
    where = _where(first["loc"])
    kind = first["type"]
    if kind == "missing":
        code, detail = "missing_field", f"missing field {where!r}"
    elif kind == "extra_forbidden":
        unknown = [_where(p["loc"]) for p in problems if p["type"] == "extra_forbidden"]
        code = "unknown_field"
        detail = (f"unknown field(s) {', '.join(repr(u[:40]) for u in unknown[:10])}; "
                  f"allowed: {', '.join(model.model_fields)}")
    else:
        code = "invalid_field"
        msg = first["msg"].removeprefix("Value error, ")
        detail = f"{where}: {msg[:1].lower() + msg[1:]} (got {json_type(first.get('input'))})"
    errors = [{"field": _where(p["loc"])[:80], "reason": p["msg"].removeprefix("Value error, ")[:200]}
              for p in problems[:50]]
    raise ApiError(400, code, detail, errors=errors)
