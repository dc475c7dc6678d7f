"""An agent loop written with the official OpenAI Python SDK, pointed at `failcore llm-proxy`.

Usage: python3 openai_agent.py <base_url>

Three model calls against the scripted server: a whole reply asking for a tool, a streamed reply asking for
another, and a streamed final answer. The tool results are computed here. Prints one JSON object: what the
agent saw at each turn. The `user` field differs on every run: it is left out of the calls' identity.
"""

import json
import os
import sys

from openai import OpenAI

MODEL = "scripted-1"


def tools_run(name, arguments):
    args = json.loads(arguments)
    if name == "forecast":
        return f"{args['city']}: 21 C"
    if name == "add":
        return str(args["a"] + args["b"])
    raise ValueError(name)


def main():
    client = OpenAI(base_url=sys.argv[1], api_key="no-key", max_retries=0, timeout=60)
    user = f"user-{os.getpid()}"
    messages = [{"role": "user", "content": "Forecast for Lisbon, plus four?"}]
    seen = []

    # Turn 1: a whole reply.
    reply = client.chat.completions.create(model=MODEL, messages=messages, user=user)
    call = reply.choices[0].message.tool_calls[0]
    seen.append({"turn": 1, "tool": call.function.name, "arguments": call.function.arguments,
                 "prompt_tokens": reply.usage.prompt_tokens})
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
    messages.append({"role": "tool", "tool_call_id": call.id,
                     "content": tools_run(call.function.name, call.function.arguments)})

    # Turn 2: streamed, with usage.
    stream = client.chat.completions.create(model=MODEL, messages=messages, user=user, stream=True,
                                            stream_options={"include_usage": True})
    chunks, name, arguments, call_id, usage = 0, "", "", None, None
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.prompt_tokens
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                call_id = tc.id or call_id
                if tc.function and tc.function.name:
                    name += tc.function.name
                if tc.function and tc.function.arguments:
                    arguments += tc.function.arguments
    seen.append({"turn": 2, "tool": name, "arguments": arguments, "chunks": chunks,
                 "prompt_tokens": usage})
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]})
    messages.append({"role": "tool", "tool_call_id": call_id, "content": tools_run(name, arguments)})

    # Turn 3: the streamed final answer.
    stream = client.chat.completions.create(model=MODEL, messages=messages, user=user, stream=True)
    pieces = []
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
    seen.append({"turn": 3, "answer": "".join(pieces), "pieces": len(pieces)})
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
