"""Prices by version: which price an event's usage is billed at, and the rule that keeps
prices from changing the past.

The catalog gives each model a first price and later price changes, each with a version
and an effective time (parley_core.catalog). The ledger records every version it starts
with in `price_versions` and refuses to start when the catalog
- changed a version that is recorded (its prices, currency or effective time),
- dropped a recorded version, or
- adds a version whose effective time is already past (beyond a grace for clock skew):
  a new price applies from its effective time, never backwards.
So an event is priced the same on every delivery, by any instance, and a line item never
changes price after it was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from parley_core.catalog import Catalog, CatalogModel, Price, PriceChange
from svc_ledger.store import LedgerStore, PriceRow


class PriceHistoryError(RuntimeError):
    """The catalog's prices contradict the prices the ledger has already used."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the catalog's prices cannot be used:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class PriceBook:
    """The catalog's models and their prices, checked against the recorded versions."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._models: Mapping[str, CatalogModel] = {model.name: model for model in catalog.models}

    @property
    def currency(self) -> str:
        return self.catalog.currency

    def price(self, model: str, when: datetime) -> Price | None:
        """The price of `model` (a catalog name) at `when`; None for a model not in the catalog."""
        entry = self._models.get(model)
        return entry.price_at(when) if entry is not None else None

    @classmethod
    async def recorded(
        cls, catalog: Catalog, store: LedgerStore, now: datetime, grace: timedelta
    ) -> PriceBook:
        """Check the catalog's prices against the recorded ones and record the new ones."""
        stored = {(row.model, row.version): row for row in await store.prices()}
        problems: list[str] = []
        fresh: list[PriceRow] = []
        for model in catalog.models:
            rows = [_row(model.name, price) for price in model.prices]
            versions = {row.version for row in rows}
            problems += [
                f"model {model.name!r}: price version {version!r} was used and is no longer in the catalog"
                for (name, version) in stored
                if name == model.name and version not in versions
            ]
            for row in rows:
                known = stored.get((row.model, row.version))
                if known is not None:
                    if known != row:
                        problems.append(
                            f"model {row.model!r}: price version {row.version!r} was used as {_text(known)}; "
                            f"the catalog now says {_text(row)}: add a new version instead"
                        )
                elif row.effective_time is not None and row.effective_time < now - grace:
                    problems.append(
                        f"model {row.model!r}: price version {row.version!r} would apply from "
                        f"{row.effective_time.isoformat()}, which has passed: a price applies from its "
                        "effective time, never backwards"
                    )
                elif row.effective_time is None and any(name == model.name for name, _ in stored):
                    problems.append(
                        f"model {row.model!r}: its first price (version {row.version!r}) is new, but "
                        "other versions were used: a first price cannot change"
                    )
                else:
                    fresh.append(row)
        if problems:
            raise PriceHistoryError(problems)
        for row in fresh:
            if not await store.record_price(row, now):
                # Another instance recorded it first: it must have recorded the same price.
                again = {(r.model, r.version): r for r in await store.prices()}
                if again.get((row.model, row.version)) != row:
                    raise PriceHistoryError(
                        [f"model {row.model!r}: price version {row.version!r} changed meanwhile"]
                    )
        return cls(catalog)


def _row(model: str, price: Price) -> PriceRow:
    when = price.effective_time if isinstance(price, PriceChange) else None
    if when is not None:  # as Cassandra keeps it: milliseconds
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    return PriceRow(
        model,
        price.version,
        when,
        price.currency,
        price.input_per_million_tokens,
        price.output_per_million_tokens,
    )


def _text(row: PriceRow) -> str:
    since = row.effective_time.isoformat() if row.effective_time else "the beginning"
    return (
        f"{row.input_per_million}/{row.output_per_million} {row.currency} micro-units per million "
        f"input/output tokens from {since}"
    )
