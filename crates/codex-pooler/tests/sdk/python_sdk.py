#!/usr/bin/env python3
"""Drives the gateway's /v1 surface with the official OpenAI Python SDK.

Run by the Rust test `sdk::python_sdk` (tests/gateway/sdk.rs) against a live
gateway and the upstream simulator. Needs `openai==3.60.0` and the env vars
OPENAI_BASE_URL (<gateway>/v1) and OPENAI_API_KEY (a Pool API key). Exits
non-zero on the first failed check.
"""

import sys

import openai
from openai import OpenAI

EXPECTED_SDK = "3.60.0"
ANSWER = "Hello, café from the simulator!"
TOOL_ARGUMENTS = '{"command":["echo","hi"]}'
MODEL = "gpt-5.5"

SHELL_TOOL = {
    "type": "function",
    "function": {
        "name": "shell",
        "description": "Runs a command",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "array", "items": {"type": "string"}}},
        },
    },
}


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


def main():
    check(openai.__version__ == EXPECTED_SDK, f"openai SDK is {EXPECTED_SDK} (got {openai.__version__})")
    client = OpenAI(max_retries=0, timeout=60)

    # responses.create, no streaming.
    r = client.responses.create(model=MODEL, input="hi", instructions="Be brief.")
    check(r.status == "completed", "responses.create completes")
    check(r.output_text == ANSWER, f"responses.create output_text ({r.output_text!r})")
    check(r.usage is not None and r.usage.total_tokens == 129, "responses.create usage")

    # responses.create with stream=True: raw events.
    types = [ev.type for ev in client.responses.create(model=MODEL, input="hi", stream=True)]
    check(types and types[-1] == "response.completed", "streamed responses end completed")

    # responses.stream with the event helper and get_final_response().
    deltas = []
    with client.responses.stream(model=MODEL, input="hi") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    check("".join(deltas) == ANSWER, "responses.stream text deltas")
    check(final.output_text == ANSWER, "responses.stream get_final_response")

    # chat.completions.create, no streaming.
    c = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    )
    check(c.object == "chat.completion", "chat completion object")
    check(c.choices[0].message.content == ANSWER, "chat completion content")
    check(c.choices[0].finish_reason == "stop", "chat completion finish_reason")
    check(c.usage.prompt_tokens == 120 and c.usage.completion_tokens == 9, "chat completion usage")

    # chat.completions.create with a tool call.
    c = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "please SIM:tool_call"}],
        tools=[SHELL_TOOL],
    )
    calls = c.choices[0].message.tool_calls or []
    check(c.choices[0].finish_reason == "tool_calls", "tool call finish_reason")
    check(len(calls) == 1 and calls[0].function.name == "shell", "tool call name")
    check(calls[0].function.arguments == TOOL_ARGUMENTS, "tool call arguments")

    # chat.completions.create streaming, with usage.
    text = []
    finish = None
    usage = None
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    check("".join(text) == ANSWER, "streamed chat content")
    check(finish == "stop", "streamed chat finish_reason")
    check(usage is not None and usage.total_tokens == 129, "streamed chat usage chunk")

    # chat.completions streaming with a tool call.
    arguments = []
    name = None
    finish = None
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "SIM:tool_call"}],
        tools=[SHELL_TOOL],
        stream=True,
    )
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    name = call.function.name
                if call.function and call.function.arguments:
                    arguments.append(call.function.arguments)
            if choice.finish_reason:
                finish = choice.finish_reason
    check(name == "shell" and "".join(arguments) == TOOL_ARGUMENTS, "streamed tool call")
    check(finish == "tool_calls", "streamed tool call finish_reason")

    # models.list.
    ids = [m.id for m in client.models.list()]
    check(MODEL in ids, f"models.list includes {MODEL} ({ids})")

    # Errors surface as SDK exceptions with the OpenAI envelope.
    try:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2
        )
        check(False, "n=2 is rejected")
    except openai.BadRequestError as err:
        check(err.code == "unsupported_parameter" and err.param == "n", "n=2 is rejected with its param")

    print("python SDK checks passed")


if __name__ == "__main__":
    main()
