"""An agent loop on the OpenAI Responses API, written with the official OpenAI Python SDK, pointed at
`failcore llm-proxy`.

Usage: python3 openai_responses.py <base_url>

Lists the models and looks one up, embeds a string, then makes three Responses calls against the scripted server: a whole
reply asking for a tool (a `function_call` item), a streamed reply asking for another (its arguments in
delta events), and a streamed final answer. The tool results are computed here, and sent back as
`function_call_output` items with the whole conversation (`store=False`: no state kept upstream). Prints one
JSON object: everything the SDK let the agent see. The `metadata` differs on every run: it is left out of
the calls' identity.
"""

import json
import os
import sys

from openai import OpenAI

MODEL = "scripted-1"

TOOLS = [
    {"type": "function", "name": "forecast", "description": "The forecast for a city.", "strict": False,
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"type": "function", "name": "add", "description": "a + b.", "strict": False,
     "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                    "required": ["a", "b"]}},
]


def tools_run(name, arguments):
    args = json.loads(arguments)
    if name == "forecast":
        return f"{args['city']}: 21 C"
    if name == "add":
        return str(args["a"] + args["b"])
    raise ValueError(name)


def usage_of(usage):
    return {"input": usage.input_tokens, "cached": usage.input_tokens_details.cached_tokens,
            "output": usage.output_tokens, "reasoning": usage.output_tokens_details.reasoning_tokens}


def main():
    client = OpenAI(base_url=sys.argv[1], api_key="no-key", max_retries=0, timeout=60)
    metadata = {"pid": str(os.getpid())}
    seen = {}

    seen["models"] = [m.id for m in client.models.list().data]
    seen["model"] = client.models.retrieve(MODEL).owned_by
    embedded = client.embeddings.create(model=MODEL, input=["Lisbon"], encoding_format="float")
    seen["embedding"] = embedded.data[0].embedding
    seen["embedding_tokens"] = embedded.usage.prompt_tokens

    items = [{"role": "user", "content": "Forecast for Lisbon, plus four?"}]
    turns = []

    # Turn 1: a whole reply with a function call.
    reply = client.responses.create(model=MODEL, input=items, tools=TOOLS, store=False, metadata=metadata)
    call = [o for o in reply.output if o.type == "function_call"][0]
    turns.append({"id": reply.id, "tool": call.name, "arguments": call.arguments, "call_id": call.call_id,
                  "usage": usage_of(reply.usage)})
    items.append({"type": "function_call", "call_id": call.call_id, "name": call.name,
                  "arguments": call.arguments})
    items.append({"type": "function_call_output", "call_id": call.call_id,
                  "output": tools_run(call.name, call.arguments)})

    # Turn 2: streamed, the call's arguments in deltas.
    stream = client.responses.create(model=MODEL, input=items, tools=TOOLS, store=False, metadata=metadata,
                                     stream=True)
    events, deltas, call, usage = [], [], None, None
    for event in stream:
        events.append(event.type)
        if event.type == "response.function_call_arguments.delta":
            deltas.append(event.delta)
        elif event.type == "response.output_item.done" and event.item.type == "function_call":
            call = event.item
        elif event.type == "response.completed":
            usage = usage_of(event.response.usage)
    turns.append({"tool": call.name, "arguments": call.arguments, "deltas": deltas, "events": events,
                  "usage": usage})
    items.append({"type": "function_call", "call_id": call.call_id, "name": call.name,
                  "arguments": call.arguments})
    items.append({"type": "function_call_output", "call_id": call.call_id,
                  "output": tools_run(call.name, call.arguments)})

    # Turn 3: the streamed final answer.
    stream = client.responses.create(model=MODEL, input=items, tools=TOOLS, store=False, metadata=metadata,
                                     stream=True)
    pieces, answer = [], None
    for event in stream:
        if event.type == "response.output_text.delta":
            pieces.append(event.delta)
        elif event.type == "response.completed":
            answer = event.response.output_text
    turns.append({"answer": "".join(pieces), "pieces": len(pieces), "output_text": answer})
    seen["turns"] = turns
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
