from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from parley.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Author(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTHOR_UNSPECIFIED: _ClassVar[Author]
    AUTHOR_USER: _ClassVar[Author]
    AUTHOR_ASSISTANT: _ClassVar[Author]
    AUTHOR_SYSTEM: _ClassVar[Author]

class MessageState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_STATE_UNSPECIFIED: _ClassVar[MessageState]
    MESSAGE_STATE_COMPLETE: _ClassVar[MessageState]
    MESSAGE_STATE_CANCELLED: _ClassVar[MessageState]
    MESSAGE_STATE_FAILED: _ClassVar[MessageState]

class MessageView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_VIEW_UNSPECIFIED: _ClassVar[MessageView]
    MESSAGE_VIEW_ACTIVE_PATH: _ClassVar[MessageView]
    MESSAGE_VIEW_ALL: _ClassVar[MessageView]

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_FULL_TEXT: _ClassVar[SearchMode]
    SEARCH_MODE_SEMANTIC: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]
AUTHOR_UNSPECIFIED: Author
AUTHOR_USER: Author
AUTHOR_ASSISTANT: Author
AUTHOR_SYSTEM: Author
MESSAGE_STATE_UNSPECIFIED: MessageState
MESSAGE_STATE_COMPLETE: MessageState
MESSAGE_STATE_CANCELLED: MessageState
MESSAGE_STATE_FAILED: MessageState
MESSAGE_VIEW_UNSPECIFIED: MessageView
MESSAGE_VIEW_ACTIVE_PATH: MessageView
MESSAGE_VIEW_ALL: MessageView
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_FULL_TEXT: SearchMode
SEARCH_MODE_SEMANTIC: SearchMode
SEARCH_MODE_HYBRID: SearchMode

class Conversation(_message.Message):
    __slots__ = ("name", "title", "model", "system_prompt", "folder", "tags", "pinned", "archived", "active_message", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    title: str
    model: str
    system_prompt: str
    folder: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    pinned: bool
    archived: bool
    active_message: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., title: _Optional[str] = ..., model: _Optional[str] = ..., system_prompt: _Optional[str] = ..., folder: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., pinned: bool = ..., archived: bool = ..., active_message: _Optional[str] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("name", "parent_message", "author", "text", "model", "state", "usage", "turn", "create_time", "sibling_count", "sibling_index")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SIBLING_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIBLING_INDEX_FIELD_NUMBER: _ClassVar[int]
    name: str
    parent_message: str
    author: Author
    text: str
    model: str
    state: MessageState
    usage: _common_pb2.TokenUsage
    turn: str
    create_time: _timestamp_pb2.Timestamp
    sibling_count: int
    sibling_index: int
    def __init__(self, name: _Optional[str] = ..., parent_message: _Optional[str] = ..., author: _Optional[_Union[Author, str]] = ..., text: _Optional[str] = ..., model: _Optional[str] = ..., state: _Optional[_Union[MessageState, str]] = ..., usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., turn: _Optional[str] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., sibling_count: _Optional[int] = ..., sibling_index: _Optional[int] = ...) -> None: ...

class CreateConversationRequest(_message.Message):
    __slots__ = ("parent", "conversation", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    conversation: Conversation
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., conversation: _Optional[_Union[Conversation, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class GetConversationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class ListConversationsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "show_archived", "folder", "tag")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SHOW_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    show_archived: bool
    folder: str
    tag: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., show_archived: bool = ..., folder: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class ListConversationsResponse(_message.Message):
    __slots__ = ("conversations", "next_page_token")
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[Conversation]
    next_page_token: str
    def __init__(self, conversations: _Optional[_Iterable[_Union[Conversation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateConversationRequest(_message.Message):
    __slots__ = ("conversation", "update_mask")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class DeleteConversationRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteConversationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "view")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    view: MessageView
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., view: _Optional[_Union[MessageView, str]] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_page_token")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    next_page_token: str
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AppendMessageRequest(_message.Message):
    __slots__ = ("parent", "message", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    message: Message
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class AppendMessageResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class SearchMessagesRequest(_message.Message):
    __slots__ = ("parent", "query", "mode", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    query: str
    mode: SearchMode
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., query: _Optional[str] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("message", "conversation_title", "snippet", "score", "snippet_matches")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_TITLE_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_MATCHES_FIELD_NUMBER: _ClassVar[int]
    message: Message
    conversation_title: str
    snippet: str
    score: float
    snippet_matches: _containers.RepeatedCompositeFieldContainer[TextRange]
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., conversation_title: _Optional[str] = ..., snippet: _Optional[str] = ..., score: _Optional[float] = ..., snippet_matches: _Optional[_Iterable[_Union[TextRange, _Mapping]]] = ...) -> None: ...

class TextRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class SearchMessagesResponse(_message.Message):
    __slots__ = ("hits", "next_page_token")
    HITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    next_page_token: str
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ShareLink(_message.Message):
    __slots__ = ("name", "token", "last_message", "expire_time", "password_protected", "create_time", "view_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_PROTECTED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    VIEW_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    token: str
    last_message: str
    expire_time: _timestamp_pb2.Timestamp
    password_protected: bool
    create_time: _timestamp_pb2.Timestamp
    view_count: int
    def __init__(self, name: _Optional[str] = ..., token: _Optional[str] = ..., last_message: _Optional[str] = ..., expire_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., password_protected: bool = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., view_count: _Optional[int] = ...) -> None: ...

class CreateShareLinkRequest(_message.Message):
    __slots__ = ("parent", "share_link", "password", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SHARE_LINK_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    share_link: ShareLink
    password: str
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., share_link: _Optional[_Union[ShareLink, _Mapping]] = ..., password: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateShareLinkResponse(_message.Message):
    __slots__ = ("share_link",)
    SHARE_LINK_FIELD_NUMBER: _ClassVar[int]
    share_link: ShareLink
    def __init__(self, share_link: _Optional[_Union[ShareLink, _Mapping]] = ...) -> None: ...

class ListShareLinksRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListShareLinksResponse(_message.Message):
    __slots__ = ("share_links", "next_page_token")
    SHARE_LINKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    share_links: _containers.RepeatedCompositeFieldContainer[ShareLink]
    next_page_token: str
    def __init__(self, share_links: _Optional[_Iterable[_Union[ShareLink, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteShareLinkRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteShareLinkResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSharedConversationRequest(_message.Message):
    __slots__ = ("token", "password")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    token: str
    password: str
    def __init__(self, token: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class GetSharedConversationResponse(_message.Message):
    __slots__ = ("title", "messages", "share_time")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SHARE_TIME_FIELD_NUMBER: _ClassVar[int]
    title: str
    messages: _containers.RepeatedCompositeFieldContainer[SharedMessage]
    share_time: _timestamp_pb2.Timestamp
    def __init__(self, title: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[SharedMessage, _Mapping]]] = ..., share_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SharedMessage(_message.Message):
    __slots__ = ("author", "text", "model")
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    author: Author
    text: str
    model: str
    def __init__(self, author: _Optional[_Union[Author, str]] = ..., text: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ExportUserDataRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ExportUserDataResponse(_message.Message):
    __slots__ = ("header", "conversation", "message", "share_link")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SHARE_LINK_FIELD_NUMBER: _ClassVar[int]
    header: ExportHeader
    conversation: Conversation
    message: Message
    share_link: ShareLink
    def __init__(self, header: _Optional[_Union[ExportHeader, _Mapping]] = ..., conversation: _Optional[_Union[Conversation, _Mapping]] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., share_link: _Optional[_Union[ShareLink, _Mapping]] = ...) -> None: ...

class ExportHeader(_message.Message):
    __slots__ = ("user", "export_time", "format_version")
    USER_FIELD_NUMBER: _ClassVar[int]
    EXPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    user: str
    export_time: _timestamp_pb2.Timestamp
    format_version: int
    def __init__(self, user: _Optional[str] = ..., export_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., format_version: _Optional[int] = ...) -> None: ...

class DeleteUserDataRequest(_message.Message):
    __slots__ = ("name", "confirm")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_FIELD_NUMBER: _ClassVar[int]
    name: str
    confirm: str
    def __init__(self, name: _Optional[str] = ..., confirm: _Optional[str] = ...) -> None: ...

class DeleteUserDataResponse(_message.Message):
    __slots__ = ("deleted_conversations", "deleted_messages", "deleted_share_links", "delete_time", "event_id")
    DELETED_CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    DELETED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    DELETED_SHARE_LINKS_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    deleted_conversations: int
    deleted_messages: int
    deleted_share_links: int
    delete_time: _timestamp_pb2.Timestamp
    event_id: str
    def __init__(self, deleted_conversations: _Optional[int] = ..., deleted_messages: _Optional[int] = ..., deleted_share_links: _Optional[int] = ..., delete_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., event_id: _Optional[str] = ...) -> None: ...
