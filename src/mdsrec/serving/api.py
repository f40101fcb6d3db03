"""The HTTP API's request and response bodies as pydantic models: what ``/openapi.json`` and ``/docs`` describe.

Requests to rank (``POST /v1/recommend``) carry limits that are settings of the service (``top``, the length of a
history, the number of requests in one call), so their models are made per service by :func:`request_models`;
the response bodies are fixed. A result is a line of ``mdsrec recommend`` (fields that do not apply are left out).
"""

# No `from __future__ import annotations`: pydantic and FastAPI read these annotations at run time, including
# those of the classes made inside request_models.

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

Stage = Literal["next", "test", "valid"]
ItemField = Literal["key", "token"]
ColdStart = Literal["error", "popular"]


@dataclass(frozen=True)
class Limits:
    """What one call may ask for; a request over a limit is a 4xx whose message names the field."""

    max_top: int = 1000  # items per list
    max_history: int = 1000  # items in a session's history
    max_requests: int = 256  # requests (users or sessions) in one POST /v1/recommend


# -- responses ---------------------------------------------------------------------------------------------------


class RankedItem(BaseModel):
    rank: int = Field(description="1 = best")
    id: int = Field(description="internal item id (1..N; 0 is padding and never listed)")
    key: str = Field(description="items.tsv key, e.g. the ASIN")
    token: str = Field(description="the item's token in the source data")
    score: float = Field(description="the model's score (equal scores: lower id first)")


class Recommendation(BaseModel):
    id: str = Field(description="the request's id: as given, else the user token or the request's position")
    history_length: int = Field(
        description="items in the history ranked from (the model sees the last max_len)"
    )
    items: list[RankedItem]
    user_index: int | None = Field(None, description="0-based row of users.tsv (users only)")
    unknown_items: list[str] | None = Field(
        None, description="history items skipped as unknown (skip_unknown)"
    )
    fallback: Literal["popular"] | None = Field(None, description="a cold start ranked by popularity")


class RequestFailure(BaseModel):
    id: str
    error: str = Field(description="why this request got no list (the others in the call are unaffected)")


class RecommendResponse(BaseModel):
    results: list[Recommendation | RequestFailure] = Field(description="one per request, in order")


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, naming the field")
    request_id: str | None = Field(None, description="also in the X-Request-ID header and the server's log")


class Health(BaseModel):
    status: Literal["live", "ready", "starting", "failed"]
    reason: str | None = Field(None, description="why the service is not ready (failed warm-up)")


class DataInfo(BaseModel):
    name: str
    fingerprint: str
    items: int
    users: int


class ModelInfo(BaseModel):
    model: str = Field(description="registered model name")
    run: str | None = Field(description="name of the run directory")
    data: DataInfo
    config: dict[str, Any] = Field(description="the run's resolved config")
    commit: str | None = Field(description="git commit of the code that trained the run (run.json)")
    mdsrec_version: str
    loaded_at: str = Field(description="when the model was loaded (UTC, ISO 8601)")
    exclude_history: bool = Field(
        description="the run's eval.exclude_history: the default of exclude_history"
    )
    cold_start: ColdStart = Field(description="the service's default for sessions without a known item")
    limits: dict[str, int] = Field(description="max_top, max_history, max_requests, max_body_bytes")


# -- requests ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestModels:
    """The request models of one service (their limits are its settings)."""

    user: type[BaseModel]
    session: type[BaseModel]
    body: type[BaseModel]


def _query_kind(value: Any) -> str | None:
    """A request with a ``user`` is a user's; any other object a session's."""
    if isinstance(value, dict):
        return "UserQuery" if "user" in value else "SessionQuery"
    if isinstance(value, BaseModel):
        return type(value).__name__
    return None


def json_integer(value: Any) -> Any:
    """JSON Schema's integer: a number without a fractional part (19.0 is one), never a boolean or a string."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("Input should be a valid integer (a JSON number, not a string or boolean)")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("Input should be a valid integer, got a number with a fractional part")
        return int(value)
    return value


def request_models(limits: Limits) -> RequestModels:
    """The bodies of ``POST /v1/recommend`` under ``limits``: ``{"requests": [UserQuery | SessionQuery, ...]}``."""
    # the bounds before the validator, so that the JSON schema carries them as minimum/maximum
    Top = Annotated[
        int, Field(ge=1, le=limits.max_top, description="items in the list"), BeforeValidator(json_integer)
    ]

    class QueryOptions(BaseModel):
        # strict: "no" is no boolean, 5 no string; numbers as JSON Schema's (json_integer)
        model_config = ConfigDict(extra="forbid", strict=True)
        id: str | None = Field(None, description="echoed in the result")
        top: Top = 10
        exclude_history: bool | None = Field(
            None, description="leave the history's items out (null: the run's eval.exclude_history)"
        )
        candidates: list[str] | None = Field(
            None, description="list only these items (named as item_field says), e.g. what is in stock"
        )
        item_field: ItemField = Field("key", description="how items are named: items.tsv key or token")
        skip_unknown: bool = Field(
            False, description="drop unknown history/candidate items instead of failing"
        )

    class UserQuery(QueryOptions):
        user: str = Field(description="a user token of users.tsv")
        stage: Stage = Field(
            "next", description="whole sequence (next), or the history before the held-out test/valid item"
        )

    class SessionQuery(QueryOptions):
        history: list[str] = Field(
            max_length=limits.max_history, description="item keys (or tokens), oldest first"
        )
        cold_start: ColdStart | None = Field(
            None,
            description="a session without a known item: error, or the most popular items (null: the service's)",
        )

    Query = Annotated[
        Annotated[UserQuery, Tag("UserQuery")] | Annotated[SessionQuery, Tag("SessionQuery")],
        Discriminator(_query_kind),
    ]

    class RecommendBody(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        requests: list[Query] = Field(
            min_length=1, max_length=limits.max_requests, description="users or sessions, ranked together"
        )

    return RequestModels(UserQuery, SessionQuery, RecommendBody)
