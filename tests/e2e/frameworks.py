"""Agents of four frameworks, wired beneath FailCore as their users wire them (tests/frameworks.rs).

    python frameworks.py openai_agents <json config>
    python frameworks.py pydantic_ai <json config>
    python frameworks.py autogen <json config>
    python frameworks.py crewai <json config>

Each agent's model is the framework's OpenAI client with its `base_url` at `failcore llm-proxy`, and its MCP
tools come from `failcore proxy` in front of the official filesystem server. The config gives `base_url`,
`model`, the `prompt`, and the MCP server's `command`, `args` and `env` (FAILCORE_RESUME / FAILCORE_OFFLINE
go there: the arguments, and so the tools' names, never change). The result is one JSON object on stdout:
the final answer and the text of every tool result the agent received, in order.
"""

import asyncio
import json
import sys


async def openai_agents(cfg):
    from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
    from agents.items import ToolCallOutputItem
    from agents.mcp import MCPServerStdio
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no trace upload to the provider
    client = AsyncOpenAI(base_url=cfg["base_url"], api_key="unused")
    fs = MCPServerStdio(
        params={"command": cfg["command"], "args": cfg["args"], "env": cfg["env"]},
        client_session_timeout_seconds=60,
    )
    async with fs:
        agent = Agent(
            name="files",
            instructions="Work on the files.",
            mcp_servers=[fs],
            model=OpenAIResponsesModel(model=cfg["model"], openai_client=client),
        )
        result = await Runner.run(agent, cfg["prompt"])
    outputs = [str(i.output) for i in result.new_items if isinstance(i, ToolCallOutputItem)]
    return {"final": result.final_output, "tool_results": outputs}


async def pydantic_ai(cfg):
    from fastmcp.client.transports import StdioTransport
    from pydantic_ai import Agent
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.messages import RetryPromptPart, ToolReturnPart
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(
        cfg["model"], provider=OpenAIProvider(base_url=cfg["base_url"], api_key="unused")
    )
    fs = MCPToolset(StdioTransport(command=cfg["command"], args=cfg["args"], env=cfg["env"]))
    agent = Agent(model, toolsets=[fs])
    async with agent:
        result = await agent.run(cfg["prompt"])
    outputs = []
    for message in result.all_messages():
        for part in message.parts:
            if isinstance(part, ToolReturnPart):
                outputs.append(part.model_response_str())
            elif isinstance(part, RetryPromptPart) and part.tool_name:
                outputs.append(part.model_response())
    return {"final": result.output, "tool_results": outputs}


async def autogen(cfg):
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import ToolCallExecutionEvent
    from autogen_ext.models.openai import OpenAIChatCompletionClient
    from autogen_ext.tools.mcp import StdioServerParams, mcp_server_tools

    client = OpenAIChatCompletionClient(
        model=cfg["model"],
        base_url=cfg["base_url"],
        api_key="unused",
        model_info={
            "vision": False,
            "function_calling": True,
            "json_output": False,
            "family": "unknown",
            "structured_output": False,
        },
    )
    fs = StdioServerParams(
        command=cfg["command"], args=cfg["args"], env=cfg["env"], read_timeout_seconds=60
    )
    tools = await mcp_server_tools(fs)  # one MCP session per tool call: the run key makes them one run
    agent = AssistantAgent("files", model_client=client, tools=tools, max_tool_iterations=5)
    result = await agent.run(task=cfg["prompt"])
    outputs = [
        r.content
        for m in result.messages
        if isinstance(m, ToolCallExecutionEvent)
        for r in m.content
    ]
    return {"final": result.messages[-1].content, "tool_results": outputs}


async def crewai(cfg):
    import os

    # No telemetry or trace upload.
    os.environ.update(
        CREWAI_DISABLE_TELEMETRY="true", CREWAI_TRACING_ENABLED="false", OTEL_SDK_DISABLED="true"
    )
    from crewai import LLM, Agent, Crew, Task
    from crewai.mcp import MCPServerStdio

    llm = LLM(model=cfg["model"], base_url=cfg["base_url"], api_key="unused", custom_openai=True)
    # CrewAI names each tool after the whole command line and opens a session per tool call: the mode goes
    # in `env` (never `args`), and the run key in the policy file's [proxy] table.
    fs = MCPServerStdio(command=cfg["command"], args=cfg["args"], env=cfg["env"])
    agent = Agent(role="files", goal="Work on the files.", backstory="A careful clerk.", llm=llm, mcps=[fs])
    task = Task(description=cfg["prompt"], expected_output="What was done.", agent=agent)
    result = await asyncio.to_thread(Crew(agents=[agent], tasks=[task]).kickoff)
    outputs = [
        str(m["content"])
        for out in result.tasks_output
        for m in (out.messages or [])
        if m.get("role") == "tool"
    ]
    return {"final": result.raw, "tool_results": outputs}


if __name__ == "__main__":
    mode, cfg = sys.argv[1], json.loads(sys.argv[2])
    run = {"openai_agents": openai_agents, "pydantic_ai": pydantic_ai, "autogen": autogen, "crewai": crewai}[
        mode
    ]
    print(json.dumps(asyncio.run(run(cfg))))
