"""An agent written with the OpenAI Agents SDK, on its default model and model API (Responses), pointed at
`failcore llm-proxy`.

Usage: python3 openai_agents_agent.py <base_url>

The agent has two function tools, `forecast` and `add`; against the scripted server the run takes three model
calls (a call to `forecast`, a call to `add`, the final answer). Tracing export is off: nothing leaves the
machine. Prints one JSON object: what the run gave back.
"""

import json
import sys

from agents import (Agent, Runner, function_tool, set_default_openai_client,
                    set_tracing_disabled)
from agents.models import get_default_model
from openai import AsyncOpenAI


@function_tool
def forecast(city: str) -> str:
    """The forecast for a city."""
    return f"{city}: 21 C"


@function_tool
def add(a: int, b: int) -> str:
    """The sum of two numbers."""
    return str(a + b)


def main():
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=sys.argv[1], api_key="no-key", max_retries=0, timeout=60)
    set_default_openai_client(client, use_for_tracing=False)
    agent = Agent(name="forecaster", instructions="Answer with the tools.", tools=[forecast, add])
    result = Runner.run_sync(agent, "Forecast for Lisbon, plus four?")
    calls = [{"tool": item.raw_item.name, "arguments": json.loads(item.raw_item.arguments)}
             for item in result.new_items if item.type == "tool_call_item"]
    outputs = [item.output for item in result.new_items if item.type == "tool_call_output_item"]
    usage = result.context_wrapper.usage
    print(json.dumps({"model": get_default_model(), "answer": result.final_output, "calls": calls, "outputs": outputs,
                      "requests": usage.requests, "input_tokens": usage.input_tokens,
                      "output_tokens": usage.output_tokens}))


if __name__ == "__main__":
    main()
