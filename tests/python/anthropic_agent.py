"""An agent loop written with the official Anthropic Python SDK, pointed at `failcore llm-proxy`.

Usage: python3 anthropic_agent.py <base_url>

Three model calls against the scripted server's Messages API: a whole reply asking for a tool, a streamed reply
asking for another, and a streamed final answer. The tool results are computed here. Prints one JSON object:
what the agent saw at each turn. `metadata.user_id` differs on every run: it is left out of the calls' identity.
"""

import json
import os
import sys

from anthropic import Anthropic

MODEL = "scripted-1"
TOOLS = [
    {"name": "forecast", "description": "The weather of a city.",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
    {"name": "add", "description": "a + b.",
     "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}},
]


def tools_run(name, args):
    if name == "forecast":
        return f"{args['city']}: 21 C"
    if name == "add":
        return str(args["a"] + args["b"])
    raise ValueError(name)


def answer_tool(messages, call_id, name, args):
    messages.append({"role": "assistant", "content": [
        {"type": "tool_use", "id": call_id, "name": name, "input": args}]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call_id, "content": tools_run(name, args)}]})


def main():
    client = Anthropic(base_url=sys.argv[1], api_key="no-key", max_retries=0, timeout=60)
    metadata = {"user_id": f"user-{os.getpid()}"}
    messages = [{"role": "user", "content": "Forecast for Lisbon, plus four?"}]
    seen = []

    # Turn 1: a whole reply.
    reply = client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=TOOLS,
                                   metadata=metadata)
    call = next(block for block in reply.content if block.type == "tool_use")
    seen.append({"turn": 1, "tool": call.name, "input": call.input, "stop": reply.stop_reason,
                 "input_tokens": reply.usage.input_tokens})
    answer_tool(messages, call.id, call.name, call.input)

    # Turn 2: streamed; the tool's input arrives in pieces.
    stream = client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=TOOLS,
                                    metadata=metadata, stream=True)
    events, name, call_id, partial, output_tokens = 0, None, None, "", None
    for event in stream:
        events += 1
        if event.type == "content_block_start" and event.content_block.type == "tool_use":
            name, call_id = event.content_block.name, event.content_block.id
        elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            partial += event.delta.partial_json
        elif event.type == "message_delta":
            output_tokens = event.usage.output_tokens
    args = json.loads(partial)
    seen.append({"turn": 2, "tool": name, "input": args, "events": events, "output_tokens": output_tokens})
    answer_tool(messages, call_id, name, args)

    # Turn 3: the streamed final answer.
    stream = client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=TOOLS,
                                    metadata=metadata, stream=True)
    pieces = []
    for event in stream:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            pieces.append(event.delta.text)
    seen.append({"turn": 3, "answer": "".join(pieces), "pieces": len(pieces)})
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
