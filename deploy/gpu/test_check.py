"""deploy/gpu/check.py without a GPU: its arguments and the request it sends to the vLLM backend.

Run with `pytest deploy/gpu` (the repository's default test paths are under tests/).
"""

from __future__ import annotations

import json

import pytest
from check import build_request, chatml, parse_args


def test_defaults_check_the_production_model_on_triton_s_grpc_port() -> None:
    options = parse_args([])

    assert (options.url, options.model, options.max_tokens, options.cancel_after) == (
        "127.0.0.1:8001",
        "qwen2.5-7b-instruct",
        256,
        5,
    )


def test_arguments_are_read() -> None:
    options = parse_args(["--url", "gpu:9001", "--model", "m", "--max-tokens", "32", "--cancel-after", "2"])

    assert (options.url, options.model, options.max_tokens, options.cancel_after) == ("gpu:9001", "m", 32, 2)


@pytest.mark.parametrize("argv", [["--max-tokens", "0"], ["--cancel-after", "0"], ["--timeout", "-1"]])
def test_impossible_limits_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_the_prompt_is_chatml_ready_for_the_answer() -> None:
    assert chatml([("system", "S"), ("user", "Q")]) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_request_streams_greedily_and_asks_for_the_usage() -> None:
    request = build_request("m", "Q?", 64, "id-1")

    inputs = {tensor.name(): tensor for tensor in request["inputs"]}
    assert (request["model_name"], request["request_id"]) == ("m", "id-1")
    assert set(inputs) == {
        "text_input",
        "stream",
        "sampling_parameters",
        "exclude_input_in_output",
        "return_finish_reason",
        "return_num_input_tokens",
        "return_num_output_tokens",
    }
    for name in set(inputs) - {"text_input", "sampling_parameters"}:
        assert inputs[name].datatype() == "BOOL", name
        assert inputs[name]._get_content() == b"\x01", name
    assert json.loads(inputs["sampling_parameters"]._get_content()[4:]) == {
        "max_tokens": 64,
        "temperature": 0.0,
    }
    assert (
        inputs["text_input"]
        ._get_content()[4:]
        .decode()
        .endswith("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")
    )
    assert [output.name() for output in request["outputs"]] == [
        "text_output",
        "finish_reason",
        "num_input_tokens",
        "num_output_tokens",
    ]
