"""What a Cassandra request's span is called: its CQL verb and table, never its values."""

from __future__ import annotations

import pytest
from cassandra.query import BatchStatement, SimpleStatement

from parley_core.cassandra import describe_statement


@pytest.mark.parametrize(
    ("cql", "described"),
    [
        (
            "SELECT totals FROM ks.account_months WHERE user_id = ?",
            ("SELECT", "ks", "account_months"),
        ),
        (
            "insert into ks.hour_users (hour) values ('2026') using timestamp 3",
            ("INSERT", "ks", "hour_users"),
        ),
        ("UPDATE ks.account_months SET version = 2 WHERE user_id = 'u'", ("UPDATE", "ks", "account_months")),
        ("DELETE FROM budgets WHERE scope = 'tier:free' IF etag = 'x'", ("DELETE", "", "budgets")),
        ("CREATE TABLE IF NOT EXISTS ks.notes (a int PRIMARY KEY)", ("CREATE", "ks", "notes")),
        ("CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {}", ("CREATE", "ks", "")),
        ('SELECT "user" FROM "KS"."Mixed"', ("SELECT", "KS", "Mixed")),
        ("TRUNCATE ks.notes", ("TRUNCATE", "", "")),
    ],
)
def test_a_statement_is_described_by_its_verb_and_table(cql: str, described: tuple[str, str, str]) -> None:
    assert describe_statement(SimpleStatement(cql)) == described
    assert describe_statement(cql) == described


def test_a_batch_is_a_batch_and_no_value_reaches_the_description() -> None:
    assert describe_statement(BatchStatement()) == ("BATCH", "", "")
    secret = "SELECT * FROM ks.users WHERE email = 'alice@example.com'"
    assert "alice" not in " ".join(describe_statement(secret))
