from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from parley.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_SOURCE_UNSPECIFIED: _ClassVar[UsageSource]
    USAGE_SOURCE_MODEL: _ClassVar[UsageSource]
    USAGE_SOURCE_ESTIMATED: _ClassVar[UsageSource]

class SpendDimension(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPEND_DIMENSION_UNSPECIFIED: _ClassVar[SpendDimension]
    SPEND_DIMENSION_DAY: _ClassVar[SpendDimension]
    SPEND_DIMENSION_USER: _ClassVar[SpendDimension]
    SPEND_DIMENSION_TIER: _ClassVar[SpendDimension]
    SPEND_DIMENSION_MODEL: _ClassVar[SpendDimension]
    SPEND_DIMENSION_API_KEY: _ClassVar[SpendDimension]

class BudgetState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_STATE_UNSPECIFIED: _ClassVar[BudgetState]
    BUDGET_STATE_OK: _ClassVar[BudgetState]
    BUDGET_STATE_WARNING: _ClassVar[BudgetState]
    BUDGET_STATE_EXHAUSTED: _ClassVar[BudgetState]

class ComponentKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPONENT_KIND_UNSPECIFIED: _ClassVar[ComponentKind]
    COMPONENT_KIND_SERVICE: _ClassVar[ComponentKind]
    COMPONENT_KIND_EDGE_CLUSTER: _ClassVar[ComponentKind]
    COMPONENT_KIND_MODEL: _ClassVar[ComponentKind]
    COMPONENT_KIND_SEARCH_INDEX: _ClassVar[ComponentKind]

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATE_UNSPECIFIED: _ClassVar[HealthState]
    HEALTH_STATE_HEALTHY: _ClassVar[HealthState]
    HEALTH_STATE_DEGRADED: _ClassVar[HealthState]
    HEALTH_STATE_UNHEALTHY: _ClassVar[HealthState]
    HEALTH_STATE_UNKNOWN: _ClassVar[HealthState]
USAGE_SOURCE_UNSPECIFIED: UsageSource
USAGE_SOURCE_MODEL: UsageSource
USAGE_SOURCE_ESTIMATED: UsageSource
SPEND_DIMENSION_UNSPECIFIED: SpendDimension
SPEND_DIMENSION_DAY: SpendDimension
SPEND_DIMENSION_USER: SpendDimension
SPEND_DIMENSION_TIER: SpendDimension
SPEND_DIMENSION_MODEL: SpendDimension
SPEND_DIMENSION_API_KEY: SpendDimension
BUDGET_STATE_UNSPECIFIED: BudgetState
BUDGET_STATE_OK: BudgetState
BUDGET_STATE_WARNING: BudgetState
BUDGET_STATE_EXHAUSTED: BudgetState
COMPONENT_KIND_UNSPECIFIED: ComponentKind
COMPONENT_KIND_SERVICE: ComponentKind
COMPONENT_KIND_EDGE_CLUSTER: ComponentKind
COMPONENT_KIND_MODEL: ComponentKind
COMPONENT_KIND_SEARCH_INDEX: ComponentKind
HEALTH_STATE_UNSPECIFIED: HealthState
HEALTH_STATE_HEALTHY: HealthState
HEALTH_STATE_DEGRADED: HealthState
HEALTH_STATE_UNHEALTHY: HealthState
HEALTH_STATE_UNKNOWN: HealthState

class LineItem(_message.Message):
    __slots__ = ("name", "turn", "model", "usage", "cost", "price_version", "usage_time", "usage_source", "api_key", "tier", "finish_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    PRICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    USAGE_TIME_FIELD_NUMBER: _ClassVar[int]
    USAGE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    turn: str
    model: str
    usage: _common_pb2.TokenUsage
    cost: _common_pb2.Money
    price_version: str
    usage_time: _timestamp_pb2.Timestamp
    usage_source: UsageSource
    api_key: str
    tier: str
    finish_reason: str
    def __init__(self, name: _Optional[str] = ..., turn: _Optional[str] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., cost: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., price_version: _Optional[str] = ..., usage_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., usage_source: _Optional[_Union[UsageSource, str]] = ..., api_key: _Optional[str] = ..., tier: _Optional[str] = ..., finish_reason: _Optional[str] = ...) -> None: ...

class ModelUsage(_message.Message):
    __slots__ = ("model", "turns", "usage", "cost")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    model: str
    turns: int
    usage: _common_pb2.TokenUsage
    cost: _common_pb2.Money
    def __init__(self, model: _Optional[str] = ..., turns: _Optional[int] = ..., usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., cost: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("name", "start_time", "end_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., start_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("usage", "cost", "models")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    usage: _common_pb2.TokenUsage
    cost: _common_pb2.Money
    models: _containers.RepeatedCompositeFieldContainer[ModelUsage]
    def __init__(self, usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., cost: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelUsage, _Mapping]]] = ...) -> None: ...

class ListLineItemsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "start_time", "end_time")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., start_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLineItemsResponse(_message.Message):
    __slots__ = ("line_items", "next_page_token")
    LINE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    line_items: _containers.RepeatedCompositeFieldContainer[LineItem]
    next_page_token: str
    def __init__(self, line_items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SpendRow(_message.Message):
    __slots__ = ("key", "turns", "usage", "cost")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    key: str
    turns: int
    usage: _common_pb2.TokenUsage
    cost: _common_pb2.Money
    def __init__(self, key: _Optional[str] = ..., turns: _Optional[int] = ..., usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., cost: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class GetSpendReportRequest(_message.Message):
    __slots__ = ("dimension", "start_time", "end_time", "page_size", "page_token")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dimension: SpendDimension
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, dimension: _Optional[_Union[SpendDimension, str]] = ..., start_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetSpendReportResponse(_message.Message):
    __slots__ = ("rows", "next_page_token")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[SpendRow]
    next_page_token: str
    def __init__(self, rows: _Optional[_Iterable[_Union[SpendRow, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("name", "soft_limit", "hard_limit", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOFT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    HARD_LIMIT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    soft_limit: _common_pb2.Money
    hard_limit: _common_pb2.Money
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., soft_limit: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., hard_limit: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., update_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class SetBudgetRequest(_message.Message):
    __slots__ = ("budget",)
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class SetBudgetResponse(_message.Message):
    __slots__ = ("budget",)
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class GetBudgetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetBudgetResponse(_message.Message):
    __slots__ = ("budget", "spent", "state", "reserved")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    spent: _common_pb2.Money
    state: BudgetState
    reserved: _common_pb2.Money
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ..., spent: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., state: _Optional[_Union[BudgetState, str]] = ..., reserved: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class ModelHealth(_message.Message):
    __slots__ = ("model", "turns", "failed_turns", "output_tokens", "cancelled_turns", "cost")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    FAILED_TURNS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_TURNS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    model: str
    turns: int
    failed_turns: int
    output_tokens: int
    cancelled_turns: int
    cost: _common_pb2.Money
    def __init__(self, model: _Optional[str] = ..., turns: _Optional[int] = ..., failed_turns: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cancelled_turns: _Optional[int] = ..., cost: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class MinuteTurns(_message.Message):
    __slots__ = ("minute", "turns")
    MINUTE_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    minute: _timestamp_pb2.Timestamp
    turns: int
    def __init__(self, minute: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., turns: _Optional[int] = ...) -> None: ...

class GetAdminOverviewRequest(_message.Message):
    __slots__ = ("start_time",)
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, start_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetAdminOverviewResponse(_message.Message):
    __slots__ = ("active_users", "turns", "usage", "cost", "models", "top_users", "failed_turns", "cancelled_turns", "turns_per_minute")
    ACTIVE_USERS_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TOP_USERS_FIELD_NUMBER: _ClassVar[int]
    FAILED_TURNS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_TURNS_FIELD_NUMBER: _ClassVar[int]
    TURNS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    active_users: int
    turns: int
    usage: _common_pb2.TokenUsage
    cost: _common_pb2.Money
    models: _containers.RepeatedCompositeFieldContainer[ModelHealth]
    top_users: _containers.RepeatedCompositeFieldContainer[SpendRow]
    failed_turns: int
    cancelled_turns: int
    turns_per_minute: _containers.RepeatedCompositeFieldContainer[MinuteTurns]
    def __init__(self, active_users: _Optional[int] = ..., turns: _Optional[int] = ..., usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., cost: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelHealth, _Mapping]]] = ..., top_users: _Optional[_Iterable[_Union[SpendRow, _Mapping]]] = ..., failed_turns: _Optional[int] = ..., cancelled_turns: _Optional[int] = ..., turns_per_minute: _Optional[_Iterable[_Union[MinuteTurns, _Mapping]]] = ...) -> None: ...

class IndexLag(_message.Message):
    __slots__ = ("backlog_events", "oldest_event_age")
    BACKLOG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_EVENT_AGE_FIELD_NUMBER: _ClassVar[int]
    backlog_events: int
    oldest_event_age: _duration_pb2.Duration
    def __init__(self, backlog_events: _Optional[int] = ..., oldest_event_age: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ComponentHealth(_message.Message):
    __slots__ = ("name", "kind", "state", "detail", "index_lag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    INDEX_LAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ComponentKind
    state: HealthState
    detail: str
    index_lag: IndexLag
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ComponentKind, str]] = ..., state: _Optional[_Union[HealthState, str]] = ..., detail: _Optional[str] = ..., index_lag: _Optional[_Union[IndexLag, _Mapping]] = ...) -> None: ...

class GetSystemHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSystemHealthResponse(_message.Message):
    __slots__ = ("components", "check_time")
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    components: _containers.RepeatedCompositeFieldContainer[ComponentHealth]
    check_time: _timestamp_pb2.Timestamp
    def __init__(self, components: _Optional[_Iterable[_Union[ComponentHealth, _Mapping]]] = ..., check_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
