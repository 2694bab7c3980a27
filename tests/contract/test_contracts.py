"""Rules every contract in protos/ follows, checked over the descriptor set buf builds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[2]
BUF = REPO / ".venv" / "bin" / "buf"

SPECIFIED_METHODS = {
    "parley.session.v1.SessionService": {
        "Register", "Login", "RefreshToken", "Logout", "GetCurrentUser", "ListSessions",
        "RevokeSession", "RequestPasswordReset", "ResetPassword", "CreateApiKey", "ListApiKeys",
        "RevokeApiKey", "ListUsers", "UpdateUser", "VerifyEmail", "ResendVerificationEmail",
        "EndAllSessions",
    },
    # Internal: svc_session's internal listener only (docs/adr/0009).
    "parley.session.v1.ServiceIdentityService": {"IssueServiceToken"},
    "parley.history.v1.HistoryService": {
        "CreateConversation", "GetConversation", "ListConversations", "UpdateConversation",
        "DeleteConversation", "ListMessages", "AppendMessage", "SearchMessages", "CreateShareLink",
        "ListShareLinks", "DeleteShareLink", "GetSharedConversation", "ExportUserData", "DeleteUserData",
    },
    "parley.chat.v1.ChatService": {"Chat", "StreamTurn", "CancelTurn", "ResumeTurn", "ListModels"},
    "parley.ledger.v1.LedgerService": {
        "GetUsage", "ListLineItems", "GetSpendReport", "SetBudget", "GetBudget", "GetAdminOverview",
        "GetSystemHealth",
    },
}  # fmt: skip

EVENTS = {"MessageCreated", "TurnCompleted", "ConversationDeleted", "UserDeleted"}


@pytest.fixture(scope="module")
def image() -> descriptor_pb2.FileDescriptorSet:
    built = subprocess.run(
        [str(BUF), "build", "protos", "--exclude-imports", "-o", "-#format=binpb"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    return descriptor_pb2.FileDescriptorSet.FromString(built.stdout)


def _messages(image: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        found[f"{prefix}.{message.name}"] = message
        for nested in message.nested_type:
            walk(f"{prefix}.{message.name}", nested)

    for file in image.file:
        for message in file.message_type:
            walk(file.package, message)
    return found


def _services(image: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.ServiceDescriptorProto]:
    return {f"{f.package}.{s.name}": s for f in image.file for s in f.service}


def test_services_have_exactly_the_specified_methods(image: descriptor_pb2.FileDescriptorSet) -> None:
    services = _services(image)
    assert set(services) == set(SPECIFIED_METHODS)
    for name, methods in SPECIFIED_METHODS.items():
        assert {m.name for m in services[name].method} == methods, name


def test_every_list_method_paginates(image: descriptor_pb2.FileDescriptorSet) -> None:
    messages = _messages(image)
    lists = [m for s in _services(image).values() for m in s.method if m.name.startswith("List")]
    assert len(lists) >= 8
    for method in lists:
        request = {f.name: f for f in messages[method.input_type.lstrip(".")].field}
        response = {f.name: f for f in messages[method.output_type.lstrip(".")].field}
        assert request["page_size"].type == descriptor_pb2.FieldDescriptorProto.TYPE_INT32, method.name
        assert request["page_token"].type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING, method.name
        assert response["next_page_token"].type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING, (
            method.name
        )


def test_every_enum_starts_with_unspecified(image: descriptor_pb2.FileDescriptorSet) -> None:
    enums = [e for f in image.file for e in f.enum_type]
    enums += [e for m in _messages(image).values() for e in m.enum_type]
    assert enums
    for enum in enums:
        zero = next(v for v in enum.value if v.number == 0)
        assert zero.name.endswith("_UNSPECIFIED"), enum.name
        assert zero is enum.value[0], enum.name


def test_every_rpc_has_its_own_request_and_response(image: descriptor_pb2.FileDescriptorSet) -> None:
    seen: dict[str, str] = {}
    for service in _services(image).values():
        for method in service.method:
            for kind, type_name in (("request", method.input_type), ("response", method.output_type)):
                assert not type_name.startswith(".google.protobuf."), f"{method.name} {kind} is a shared type"
                assert type_name.endswith(f".{method.name}{kind.title()}"), (
                    f"{method.name} {kind}: {type_name}"
                )
                assert type_name not in seen, f"{type_name} used by {seen.get(type_name)} and {method.name}"
                seen[type_name] = method.name


def test_resources_have_name_as_field_one(image: descriptor_pb2.FileDescriptorSet) -> None:
    resources = [
        "User",
        "Session",
        "ApiKey",
        "Conversation",
        "Message",
        "ShareLink",
        "Model",
        "LineItem",
        "Budget",
    ]
    by_short = {full.rsplit(".", 1)[1]: m for full, m in _messages(image).items()}
    for resource in resources:
        first = min(by_short[resource].field, key=lambda f: f.number)
        assert (first.name, first.number) == ("name", 1), resource


def test_events_carry_id_time_and_user(image: descriptor_pb2.FileDescriptorSet) -> None:
    events = {
        name.rsplit(".", 1)[1]: message
        for name, message in _messages(image).items()
        if name.startswith("parley.events.v1.")
    }
    assert set(events) == EVENTS
    for name, message in events.items():
        fields = {f.name: f for f in message.field}
        assert fields["event_id"].number == 1, name
        assert fields["event_time"].type_name == ".google.protobuf.Timestamp", name
        assert "user" in fields, name


def test_money_is_never_a_float(image: descriptor_pb2.FileDescriptorSet) -> None:
    floats = {descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT, descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE}
    for name, message in _messages(image).items():
        for field in message.field:
            if field.type in floats:
                assert "price" not in field.name, f"{name}.{field.name}"
                assert "cost" not in field.name, f"{name}.{field.name}"
