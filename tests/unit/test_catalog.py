"""parley_core.catalog: the real catalog loads, and every kind of mistake is named precisely."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from parley_core.catalog import (
    BytesTokenizer,
    Catalog,
    CatalogError,
    OpenAIBackend,
    Price,
    TextTokenizer,
    TritonBackend,
    TritonTokenizer,
    UnknownModelError,
    load_catalog,
)

REAL_CATALOG = Path(__file__).resolve().parents[2] / "model_repo" / "catalog.toml"
GPU_CATALOG = Path(__file__).resolve().parents[2] / "deploy" / "gpu" / "catalog.toml"

# Two models that pass every check; each test below changes one thing.
VALID = """\
schema_version = 2
default_model = "alpha"

[[models]]
name = "alpha"
display_name = "Alpha"
context_window = 100
max_output_tokens = 50
capabilities = ["chat", "streaming"]
fallbacks = ["beta"]

[[models.backends]]
kind = "triton"
model = "alpha"

[[models.backends]]
kind = "openai"
endpoint = "llama"
model = "alpha-served"
parameters = { temperature = 0.5 }

[models.price]
currency = "USD"
input_per_million_tokens = 1
output_per_million_tokens = 2

[models.tokenizer]
kind = "triton"
model = "alpha-tokens"

[[models]]
name = "beta"
display_name = "Beta"
context_window = 200
max_output_tokens = 200

[[models.backends]]
kind = "triton"
model = "beta"

[models.price]
currency = "USD"
input_per_million_tokens = 0
output_per_million_tokens = 0
"""

PRO_ONLY_MODEL = """
[[models]]
name = "gamma"
display_name = "Gamma"
tiers = ["pro", "enterprise"]
context_window = 100
max_output_tokens = 10

[[models.backends]]
kind = "triton"
model = "gamma"

[models.price]
currency = "USD"
input_per_million_tokens = 5
output_per_million_tokens = 5
"""


def _load(tmp_path: Path, text: str) -> Catalog:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return load_catalog(path)


#: Beta's currency line (with the line after it, to tell it from alpha's).
BETA_CURRENCY = 'currency = "USD"\ninput_per_million_tokens = 0'


def _edited(old: str, new: str, text: str = VALID) -> str:
    assert text.count(old) >= 1, f"{old!r} is not in the catalog text"
    return text.replace(old, new, 1)


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(CatalogError) as raised:
        _load(tmp_path, text)
    assert raised.value.path == tmp_path / "catalog.toml"
    return raised.value.problems


def test_the_real_catalog_loads_with_smollm2_as_the_default() -> None:
    catalog = load_catalog(REAL_CATALOG)

    assert catalog.default_model == "smollm2"
    assert [model.name for model in catalog.models] == ["smollm2", "parley-tiny", "parley-scripted"]
    assert catalog.model("smollm2").backends == (
        TritonBackend(kind="triton", model="smollm2"),
        OpenAIBackend(kind="openai", endpoint="llama", model="smollm2"),
    )
    assert catalog.model("parley-scripted").backends == (
        TritonBackend(kind="triton", model="parley-scripted"),
    )
    assert catalog.model("parley-tiny").backends == (TritonBackend(kind="triton", model="parley-tiny"),)


def test_the_real_catalog_counts_each_model_s_tokens_as_the_model_does() -> None:
    catalog = load_catalog(REAL_CATALOG)

    assert catalog.model("smollm2").tokenizer == TritonTokenizer(kind="triton", model="smollm2-tokens")
    assert catalog.model("parley-tiny").tokenizer == TextTokenizer(
        kind="words-and-punctuation", template="chatml"
    )
    assert catalog.model("parley-scripted").tokenizer == TextTokenizer(kind="words", template="chatml")


def test_the_gpu_catalog_loads_with_the_gpu_model_first_and_smollm2_behind_it() -> None:
    catalog = load_catalog(GPU_CATALOG)

    gpu = catalog.model(catalog.default_model)
    assert gpu.name == "qwen2.5-7b-instruct"
    assert gpu.backends == (
        TritonBackend(
            kind="triton",
            model="qwen2.5-7b-instruct",
            parameters={"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05},
        ),
    )
    assert gpu.fallbacks == ("smollm2",)
    assert gpu.tokenizer == BytesTokenizer(kind="bytes", prompt_overhead=100)
    assert [model.name for model in catalog.models] == ["qwen2.5-7b-instruct", "smollm2"]
    engine = json.loads((GPU_CATALOG.parent / "model_repo" / gpu.name / "1" / "model.json").read_text())
    assert engine["max_model_len"] == gpu.context_window


def test_a_model_without_a_tokenizer_is_counted_in_bytes(tmp_path: Path) -> None:
    beta = _load(tmp_path, VALID).model("beta")

    assert beta.tokenizer == BytesTokenizer(kind="bytes", message_overhead=0, prompt_overhead=0)


def test_a_text_tokenizer_reads_as_written(tmp_path: Path) -> None:
    text = _edited(
        'kind = "triton"\nmodel = "alpha-tokens"',
        'kind = "words"\ntemplate = "none"\nmessage_overhead = 4\nprompt_overhead = 3',
    )

    assert _load(tmp_path, text).model("alpha").tokenizer == TextTokenizer(
        kind="words", template="none", message_overhead=4, prompt_overhead=3
    )


def test_a_valid_catalog_reads_as_written(tmp_path: Path) -> None:
    catalog = _load(tmp_path, VALID)

    alpha = catalog.model("alpha")
    assert alpha.display_name == "Alpha"
    assert (alpha.context_window, alpha.max_output_tokens) == (100, 50)
    assert alpha.capabilities == ("chat", "streaming")
    assert alpha.fallbacks == ("beta",)
    assert [backend.key for backend in alpha.backends] == ["triton/alpha", "openai/llama/alpha-served"]
    assert alpha.backends[1].parameters == {"temperature": 0.5}
    assert alpha.price == Price(currency="USD", input_per_million_tokens=1, output_per_million_tokens=2)
    assert catalog.model("beta").tiers == ()


def test_tiers_limit_who_sees_a_model(tmp_path: Path) -> None:
    catalog = _load(tmp_path, VALID + PRO_ONLY_MODEL)

    assert [model.name for model in catalog.available_to("free")] == ["alpha", "beta"]
    assert [model.name for model in catalog.available_to("pro")] == ["alpha", "beta", "gamma"]
    assert catalog.model("gamma").available_to("enterprise")
    assert not catalog.model("gamma").available_to("free")


def test_an_unknown_model_is_a_lookup_error(tmp_path: Path) -> None:
    catalog = _load(tmp_path, VALID)

    with pytest.raises(UnknownModelError) as raised:
        catalog.model("omega")
    assert raised.value.name == "omega"
    assert isinstance(raised.value, LookupError)


def test_the_error_message_lists_the_file_and_every_problem(tmp_path: Path) -> None:
    beta_in_eu = _edited(BETA_CURRENCY, BETA_CURRENCY.replace("USD", "eu"))
    text = _edited("context_window = 200", "context_window = 0", beta_in_eu)
    with pytest.raises(CatalogError) as raised:
        _load(tmp_path, text)

    assert str(raised.value) == (
        f"{tmp_path / 'catalog.toml'} is not a valid model catalog:\n"
        "  - model 'beta': context_window: Input should be greater than 0 (got 0)\n"
        "  - model 'beta': price.currency: String should match pattern '^[A-Z]{3}$' (got 'eu')"
    )


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        pytest.param(
            'kind = "openai"',
            'kind = "grpc"',
            "model 'alpha': backends[1]: Input tag 'grpc' found using 'kind' does not match any of "
            "the expected tags: 'triton', 'openai'",
            id="unknown-backend-kind",
        ),
        pytest.param(
            'endpoint = "llama"\n',
            "",
            "model 'alpha': backends[1].endpoint: Field required",
            id="openai-backend-without-endpoint",
        ),
        pytest.param(
            '[[models.backends]]\nkind = "triton"\nmodel = "beta"\n',
            "backends = []\n",
            "model 'beta': backends: a model needs at least one",
            id="no-backend",
        ),
        pytest.param(
            'kind = "triton"\nmodel = "alpha"\n',
            'kind = "triton"\nmodel = "alpha"\n\n[[models.backends]]\nkind = "triton"\nmodel = "alpha"\n',
            "model 'alpha': backends: 'triton/alpha' is listed twice",
            id="duplicate-backend",
        ),
        pytest.param(
            'fallbacks = ["beta"]',
            'fallbacks = ["omega"]',
            "model 'alpha': fallbacks: no model named 'omega'",
            id="unknown-fallback",
        ),
        pytest.param(
            'fallbacks = ["beta"]',
            'fallbacks = ["alpha"]',
            "model 'alpha': fallbacks: lead back to 'alpha' (alpha -> alpha)",
            id="fallback-to-itself",
        ),
        pytest.param(
            'fallbacks = ["beta"]',
            'fallbacks = ["beta", "beta"]',
            "model 'alpha': fallbacks: 'beta' is listed twice",
            id="duplicate-fallback",
        ),
        pytest.param(
            "context_window = 100",
            "context_window = 0",
            "model 'alpha': context_window: Input should be greater than 0 (got 0)",
            id="zero-context-window",
        ),
        pytest.param(
            "context_window = 100",
            "context_window = -5",
            "model 'alpha': context_window: Input should be greater than 0 (got -5)",
            id="negative-context-window",
        ),
        pytest.param(
            "max_output_tokens = 50",
            "max_output_tokens = 500",
            "model 'alpha': max_output_tokens: 500 is more than the context_window of 100",
            id="output-over-window",
        ),
        pytest.param(
            "input_per_million_tokens = 1",
            "input_per_million_tokens = -1",
            "model 'alpha': price.input_per_million_tokens: "
            "Input should be greater than or equal to 0 (got -1)",
            id="negative-price",
        ),
        pytest.param(
            "output_per_million_tokens = 2",
            "output_per_million_tokens = 2.5",
            "model 'alpha': price.output_per_million_tokens: Input should be a valid integer (got 2.5)",
            id="fractional-price",
        ),
        pytest.param(
            "output_per_million_tokens = 2",
            'output_per_million_tokens = "2"',
            "model 'alpha': price.output_per_million_tokens: Input should be a valid integer (got '2')",
            id="price-as-text",
        ),
        pytest.param(
            'currency = "USD"',
            'currency = "usd"',
            "model 'alpha': price.currency: String should match pattern '^[A-Z]{3}$' (got 'usd')",
            id="currency-not-iso",
        ),
        pytest.param(
            'capabilities = ["chat", "streaming"]',
            'capabilities = ["chat", "telepathy"]',
            "model 'alpha': capabilities[1]: Input should be 'chat', 'streaming', 'cancel', 'vision' or "
            "'tools' (got 'telepathy')",
            id="unknown-capability",
        ),
        pytest.param(
            'capabilities = ["chat", "streaming"]',
            'capabilites = ["chat", "streaming"]',
            "model 'alpha': capabilites: Extra inputs are not permitted",
            id="misspelt-field",
        ),
        pytest.param(
            'name = "beta"',
            'name = "Beta Model"',
            "model 'Beta Model': name: String should match pattern "
            "'^[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?$' (got 'Beta Model')",
            id="name-not-a-resource-id",
        ),
        pytest.param(
            "parameters = { temperature = 0.5 }",
            "parameters = { stop = [1] }",
            "model 'alpha': backends[1].parameters.stop: "
            "a parameter is a string, a number or a boolean, not [1]",
            id="parameter-not-a-scalar",
        ),
        pytest.param(
            'kind = "triton"\nmodel = "alpha-tokens"',
            'kind = "sentencepiece"',
            "model 'alpha': tokenizer: Input tag 'sentencepiece' found using 'kind' does not match any "
            "of the expected tags: 'words', 'words-and-punctuation', 'bytes', 'triton'",
            id="unknown-tokenizer-kind",
        ),
        pytest.param(
            'model = "alpha-tokens"',
            "",
            "model 'alpha': tokenizer.model: Field required",
            id="triton-tokenizer-without-model",
        ),
        pytest.param(
            'model = "alpha-tokens"',
            'model = "alpha tokens"',
            "model 'alpha': tokenizer.model: String should match pattern '^[A-Za-z0-9_.-]+$' "
            "(got 'alpha tokens')",
            id="triton-tokenizer-model-not-a-folder-name",
        ),
        pytest.param(
            'kind = "triton"\nmodel = "alpha-tokens"',
            'kind = "words"\ntemplate = "llama3"',
            "model 'alpha': tokenizer.template: Input should be 'chatml' or 'none' (got 'llama3')",
            id="unknown-template",
        ),
        pytest.param(
            'kind = "triton"\nmodel = "alpha-tokens"',
            'kind = "bytes"\nmessage_overhead = -1',
            "model 'alpha': tokenizer.message_overhead: Input should be greater than or equal to 0 (got -1)",
            id="negative-overhead",
        ),
        pytest.param(
            'kind = "triton"\nmodel = "alpha-tokens"',
            'kind = "words"\nmodel = "alpha-tokens"',
            "model 'alpha': tokenizer.model: Extra inputs are not permitted (got 'alpha-tokens')",
            id="words-tokenizer-with-a-model",
        ),
        pytest.param(
            'default_model = "alpha"',
            'default_model = "omega"',
            "default_model: no model named 'omega'",
            id="unknown-default-model",
        ),
        pytest.param(
            "schema_version = 2",
            "schema_version = 1",
            "schema_version: this reader knows 2, the file says 1",
            id="old-schema-version",
        ),
        pytest.param(
            "schema_version = 2\n",
            "",
            "schema_version: this reader knows 2, the file says None",
            id="no-schema-version",
        ),
        pytest.param(
            "schema_version = 2",
            "schema_version = ",
            "not TOML: Invalid value (at line 1, column 18)",
            id="not-toml",
        ),
    ],
)
def test_each_mistake_is_named_by_model_and_field(tmp_path: Path, old: str, new: str, problem: str) -> None:
    assert _problems(tmp_path, _edited(old, new)) == [problem]


def test_two_models_of_one_name_are_refused(tmp_path: Path) -> None:
    text = _edited('fallbacks = ["beta"]', "fallbacks = []", _edited('name = "beta"', 'name = "alpha"'))

    assert _problems(tmp_path, text) == ["model 'alpha': name: used by more than one model"]


def test_a_fallback_cycle_is_named_from_each_model_on_it(tmp_path: Path) -> None:
    text = _edited("max_output_tokens = 200\n", 'max_output_tokens = 200\nfallbacks = ["alpha"]\n')

    assert _problems(tmp_path, text) == [
        "model 'alpha': fallbacks: lead back to 'alpha' (alpha -> beta -> alpha)",
        "model 'beta': fallbacks: lead back to 'beta' (beta -> alpha -> beta)",
    ]


def test_a_restricted_default_model_is_refused(tmp_path: Path) -> None:
    text = _edited('default_model = "alpha"', 'default_model = "gamma"', VALID + PRO_ONLY_MODEL)

    assert _problems(tmp_path, text) == [
        "default_model: 'gamma' must be open to every tier, but its tiers are ['pro', 'enterprise']"
    ]


def test_a_fallback_must_be_open_to_every_tier_of_its_model(tmp_path: Path) -> None:
    text = _edited('fallbacks = ["beta"]', 'fallbacks = ["gamma"]', VALID + PRO_ONLY_MODEL)
    restricted = _edited(
        'name = "beta"\ndisplay_name = "Beta"\n',
        'name = "beta"\ndisplay_name = "Beta"\ntiers = ["free", "pro"]\nfallbacks = ["gamma"]\n',
        VALID + PRO_ONLY_MODEL,
    )

    assert _problems(tmp_path, text) == [
        "model 'alpha': fallbacks: 'gamma' is not open to every tier, as 'alpha' is"
    ]
    assert _problems(tmp_path, restricted) == [
        "model 'alpha': fallbacks: 'beta' is not open to every tier, as 'alpha' is",
        "model 'beta': fallbacks: 'gamma' is not open to tier 'free', as 'beta' is",
    ]


def test_an_empty_catalog_is_refused(tmp_path: Path) -> None:
    assert _problems(tmp_path, 'schema_version = 2\ndefault_model = "alpha"\nmodels = []\n') == [
        "models: the catalog needs at least one",
        "default_model: no model named 'alpha'",
    ]


PRICE_CHANGES = """
[[models.price_changes]]
version = "2026-12"
effective_time = 2026-12-01T00:00:00Z
currency = "USD"
input_per_million_tokens = 3
output_per_million_tokens = 1

[[models.price_changes]]
version = "2027-01"
effective_time = 2027-01-01T00:00:00+01:00
currency = "USD"
input_per_million_tokens = 2
output_per_million_tokens = 5
"""


def _with_price_changes(changes: str = PRICE_CHANGES) -> str:
    """VALID with `changes` added to alpha (whose first price is 1 in, 2 out)."""
    return _edited('\n[[models]]\nname = "beta"', changes + '\n[[models]]\nname = "beta"')


def test_a_price_applies_from_its_effective_time(tmp_path: Path) -> None:
    alpha = _load(tmp_path, _with_price_changes()).model("alpha")
    december = datetime(2026, 12, 1, tzinfo=UTC)

    assert alpha.price_at(december - timedelta(microseconds=1)).version == "1"
    assert alpha.price_at(december).version == "2026-12"
    assert alpha.price_at(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)).version == "2027-01"  # +01:00
    assert alpha.price_at(datetime(2026, 12, 31, 22, 59, tzinfo=UTC)).version == "2026-12"
    assert [p.version for p in alpha.prices] == ["1", "2026-12", "2027-01"]


def test_the_highest_price_from_a_time_covers_every_later_change(tmp_path: Path) -> None:
    alpha = _load(tmp_path, _with_price_changes()).model("alpha")

    highest = alpha.highest_price_from(datetime(2026, 11, 30, tzinfo=UTC))
    assert (highest.input_per_million_tokens, highest.output_per_million_tokens) == (3, 5)
    later = alpha.highest_price_from(datetime(2027, 2, 1, tzinfo=UTC))
    assert (later.input_per_million_tokens, later.output_per_million_tokens) == (2, 5)


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "micros"),
    [
        (0, 0, 0),
        (1, 0, 1),  # 0.05 micro-units: rounded up to 1, never a silent zero
        (20, 0, 1),  # exactly 1.0
        (21, 0, 2),  # 1.05
        (0, 10, 1),  # exactly 1.0
        (10, 5, 1),  # 0.5 + 0.5: the exact sum is rounded once, not each part
        (1_000_000, 1_000_000, 150_000),
    ],
)
def test_a_cost_is_the_exact_sum_rounded_up_once(input_tokens: int, output_tokens: int, micros: int) -> None:
    price = Price(currency="USD", input_per_million_tokens=50_000, output_per_million_tokens=100_000)

    assert price.cost_micros(input_tokens, output_tokens) == micros


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        pytest.param(
            PRICE_CHANGES.replace('version = "2027-01"', 'version = "2026-12"'),
            "model 'alpha': price_changes: version '2026-12' is used twice",
            id="version-twice",
        ),
        pytest.param(
            PRICE_CHANGES.replace("2027-01-01T00:00:00+01:00", "2026-11-01T00:00:00Z"),
            "model 'alpha': price_changes[1].effective_time: 2026-11-01T00:00:00+00:00 is not after "
            "the change before it (2026-12-01T00:00:00+00:00)",
            id="out-of-order",
        ),
        pytest.param(
            PRICE_CHANGES.replace('currency = "USD"', 'currency = "EUR"', 1),
            "model 'alpha': price_changes[0].currency: 'EUR' differs from price.currency 'USD'",
            id="other-currency",
        ),
        pytest.param(
            PRICE_CHANGES.replace("2026-12-01T00:00:00Z", "2026-12-01T00:00:00"),
            "model 'alpha': price_changes[0].effective_time: Input should have timezone info",
            id="no-offset",
        ),
    ],
)
def test_price_changes_that_cannot_be_applied_are_refused(tmp_path: Path, changes: str, problem: str) -> None:
    problems = _problems(tmp_path, _with_price_changes(changes))

    assert any(p.startswith(problem) for p in problems), problems


def test_a_catalog_bills_in_one_currency(tmp_path: Path) -> None:
    text = _edited(BETA_CURRENCY, BETA_CURRENCY.replace("USD", "EUR"))

    assert _problems(tmp_path, text) == [
        "price.currency: the catalog bills in one currency, but uses ['EUR', 'USD']"
    ]
