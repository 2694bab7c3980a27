from google.protobuf import timestamp_pb2 as _timestamp_pb2
from parley.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_MAX_TOKENS: _ClassVar[FinishReason]
    FINISH_REASON_CANCELLED: _ClassVar[FinishReason]
    FINISH_REASON_ERROR: _ClassVar[FinishReason]

class ModelHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_HEALTH_UNSPECIFIED: _ClassVar[ModelHealth]
    MODEL_HEALTH_READY: _ClassVar[ModelHealth]
    MODEL_HEALTH_DEGRADED: _ClassVar[ModelHealth]
    MODEL_HEALTH_UNAVAILABLE: _ClassVar[ModelHealth]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_MAX_TOKENS: FinishReason
FINISH_REASON_CANCELLED: FinishReason
FINISH_REASON_ERROR: FinishReason
MODEL_HEALTH_UNSPECIFIED: ModelHealth
MODEL_HEALTH_READY: ModelHealth
MODEL_HEALTH_DEGRADED: ModelHealth
MODEL_HEALTH_UNAVAILABLE: ModelHealth

class TurnInput(_message.Message):
    __slots__ = ("conversation", "text", "parent_message", "model", "idempotency_key", "regenerate", "branch_from_start")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PARENT_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REGENERATE_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FROM_START_FIELD_NUMBER: _ClassVar[int]
    conversation: str
    text: str
    parent_message: str
    model: str
    idempotency_key: str
    regenerate: bool
    branch_from_start: bool
    def __init__(self, conversation: _Optional[str] = ..., text: _Optional[str] = ..., parent_message: _Optional[str] = ..., model: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., regenerate: bool = ..., branch_from_start: bool = ...) -> None: ...

class TurnStarted(_message.Message):
    __slots__ = ("turn", "user_message", "assistant_message", "model", "budget_warnings")
    TURN_FIELD_NUMBER: _ClassVar[int]
    USER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ASSISTANT_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BUDGET_WARNINGS_FIELD_NUMBER: _ClassVar[int]
    turn: str
    user_message: str
    assistant_message: str
    model: str
    budget_warnings: _containers.RepeatedCompositeFieldContainer[BudgetWarning]
    def __init__(self, turn: _Optional[str] = ..., user_message: _Optional[str] = ..., assistant_message: _Optional[str] = ..., model: _Optional[str] = ..., budget_warnings: _Optional[_Iterable[_Union[BudgetWarning, _Mapping]]] = ...) -> None: ...

class BudgetWarning(_message.Message):
    __slots__ = ("budget", "soft_limit", "committed")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SOFT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    budget: str
    soft_limit: _common_pb2.Money
    committed: _common_pb2.Money
    def __init__(self, budget: _Optional[str] = ..., soft_limit: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., committed: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class TurnCompleted(_message.Message):
    __slots__ = ("finish_reason", "usage", "cost_estimate", "error_message", "error_reason")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    finish_reason: FinishReason
    usage: _common_pb2.TokenUsage
    cost_estimate: _common_pb2.Money
    error_message: str
    error_reason: str
    def __init__(self, finish_reason: _Optional[_Union[FinishReason, str]] = ..., usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., cost_estimate: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., error_message: _Optional[str] = ..., error_reason: _Optional[str] = ...) -> None: ...

class TurnEvent(_message.Message):
    __slots__ = ("turn", "sequence", "event_time", "started", "delta", "completed")
    TURN_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    turn: str
    sequence: int
    event_time: _timestamp_pb2.Timestamp
    started: TurnStarted
    delta: TextDelta
    completed: TurnCompleted
    def __init__(self, turn: _Optional[str] = ..., sequence: _Optional[int] = ..., event_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., started: _Optional[_Union[TurnStarted, _Mapping]] = ..., delta: _Optional[_Union[TextDelta, _Mapping]] = ..., completed: _Optional[_Union[TurnCompleted, _Mapping]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("start", "cancel_turn", "resume")
    START_FIELD_NUMBER: _ClassVar[int]
    CANCEL_TURN_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    start: TurnInput
    cancel_turn: str
    resume: ResumeTurnRequest
    def __init__(self, start: _Optional[_Union[TurnInput, _Mapping]] = ..., cancel_turn: _Optional[str] = ..., resume: _Optional[_Union[ResumeTurnRequest, _Mapping]] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: TurnEvent
    def __init__(self, event: _Optional[_Union[TurnEvent, _Mapping]] = ...) -> None: ...

class StreamTurnRequest(_message.Message):
    __slots__ = ("input",)
    INPUT_FIELD_NUMBER: _ClassVar[int]
    input: TurnInput
    def __init__(self, input: _Optional[_Union[TurnInput, _Mapping]] = ...) -> None: ...

class StreamTurnResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: TurnEvent
    def __init__(self, event: _Optional[_Union[TurnEvent, _Mapping]] = ...) -> None: ...

class CancelTurnRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelTurnResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: bool = ...) -> None: ...

class ResumeTurnRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class ResumeTurnResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: TurnEvent
    def __init__(self, event: _Optional[_Union[TurnEvent, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "display_name", "context_window", "max_output_tokens", "input_price_per_million", "output_price_per_million", "capabilities", "tiers", "health")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_PRICE_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PRICE_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    context_window: int
    max_output_tokens: int
    input_price_per_million: _common_pb2.Money
    output_price_per_million: _common_pb2.Money
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    tiers: _containers.RepeatedScalarFieldContainer[str]
    health: ModelHealth
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., context_window: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., input_price_per_million: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., output_price_per_million: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., capabilities: _Optional[_Iterable[str]] = ..., tiers: _Optional[_Iterable[str]] = ..., health: _Optional[_Union[ModelHealth, str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
