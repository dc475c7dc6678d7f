"""Real MCP clients for the proxy's end-to-end tests (tests/proxy_e2e.rs).

    python mcp_clients.py sdk <json config>        the official MCP Python SDK, one held session
    python mcp_clients.py langchain <json config>  a LangGraph ReAct agent over langchain-mcp-adapters,
                                                   with a scripted chat model
    python mcp_clients.py http <json config>       the official MCP Python SDK over Streamable HTTP
                                                   (`url`, `headers`), one held session
    python mcp_clients.py tasks <json config>      the official MCP Python SDK calling `tool` as a task
                                                   (SEP-1686), polling it to its end and fetching its
                                                   result; or cancelling it (`cancel`); or only asking
                                                   about the task `task_id` (no call)
    python mcp_clients.py survey <json config>     the official MCP Python SDK through every kind of
                                                   request of the "everything" server (tools with
                                                   progress, sampling, elicitation and roots; resources,
                                                   prompts, completions), clock times and random values
                                                   masked: compared directly and through the proxy

The config names the server command (`command`, `args`) and what to do; the result is one JSON object on
stdout.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def result_of(r):
    texts = [c.text for c in r.content if getattr(c, "type", "") == "text"]
    return {
        "is_error": bool(r.isError),
        "text": "\n".join(texts),
        "structured": r.structuredContent,
    }


async def sdk(cfg):
    params = StdioServerParameters(command=cfg["command"], args=cfg["args"])
    out = {"calls": []}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            for name, arguments in cfg["calls"]:
                r = await session.call_tool(name, arguments)
                out["calls"].append(result_of(r))
    return out


async def http(cfg):
    from mcp.client.streamable_http import streamablehttp_client

    out = {"calls": []}
    try:
        async with streamablehttp_client(cfg["url"], headers=cfg.get("headers")) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                out["tools"] = sorted(t.name for t in tools.tools)
                for name, arguments in cfg["calls"]:
                    r = await session.call_tool(name, arguments)
                    out["calls"].append(result_of(r))
    except BaseException as e:  # a refused connection comes as an exception group
        out["error"] = repr(e)
        leaves = [e]
        while leaves and hasattr(leaves[0], "exceptions"):
            leaves = list(leaves[0].exceptions)
        out["causes"] = [repr(x) for x in leaves]
    return out


async def tasks(cfg):
    from mcp.types import CallToolResult

    params = StdioServerParameters(command=cfg["command"], args=cfg["args"])
    out = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tasks = session.experimental
            task_id = cfg.get("task_id")
            if task_id is None:
                created = await tasks.call_tool_as_task(cfg["tool"], cfg["arguments"])
                task_id = created.task.taskId
                out["created"] = created.task.status
            out["task_id"] = task_id
            if cfg.get("cancel"):
                cancelled = await tasks.cancel_task(task_id)
                out["cancelled"] = cancelled.status
                return out
            statuses = []
            async for state in tasks.poll_task(task_id):
                statuses.append(state.status)
            out["statuses"] = statuses
            out["result"] = result_of(await tasks.get_task_result(task_id, CallToolResult))
            out["listed"] = sorted(t.taskId for t in (await tasks.list_tasks()).tasks)
    return out


def masked(value):
    """`value` as JSON text with what differs from run to run (times, random ids) masked."""
    import re

    text = json.dumps(value, sort_keys=True)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?", "<time>", text)
    text = re.sub(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<uuid>", text)
    text = re.sub(r"\b[0-9a-f]{32}\b", "<id>", text)
    text = re.sub(r"\b\d{1,2}:\d\d:\d\d( [AP]M)?", "<clock>", text)
    return json.loads(text)


async def survey(cfg):
    from mcp import types
    from mcp.types import PromptReference

    async def sampling(context, params):
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled: " + params.messages[0].content.text),
            model="scripted",
            stopReason="endTurn",
        )

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"color": "blue", "name": "Ada"})

    async def roots(context):
        return types.ListRootsResult(roots=[types.Root(uri="file:///data", name="data")])

    params = StdioServerParameters(command=cfg["command"], args=cfg["args"])
    dump = lambda r: r.model_dump(mode="json", exclude_none=True)  # noqa: E731
    out = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(
            read,
            write,
            sampling_callback=sampling,
            elicitation_callback=elicitation,
            list_roots_callback=roots,
        ) as session:
            init = await session.initialize()
            out["server"] = dump(init.serverInfo)
            out["tools"] = [dump(t) for t in (await session.list_tools()).tools]
            calls = []
            for name, arguments in cfg["calls"]:
                progress = []

                async def on_progress(p, total, message, progress=progress):
                    progress.append([p, total])

                r = await session.call_tool(name, arguments, progress_callback=on_progress)
                calls.append({"tool": name, "result": dump(r), "progress": progress})
            out["calls"] = calls
            if cfg.get("tools_only"):
                return masked(out)
            resources = (await session.list_resources()).resources
            out["resources"] = [dump(r) for r in resources]
            out["templates"] = [dump(t) for t in (await session.list_resource_templates()).resourceTemplates]
            out["read"] = [dump(await session.read_resource(r.uri)) for r in resources[:3]]
            prompts = (await session.list_prompts()).prompts
            out["prompts"] = [dump(p) for p in prompts]
            out["prompt"] = dump(await session.get_prompt("simple-prompt"))
            out["args_prompt"] = dump(await session.get_prompt("args-prompt", {"city": "Paris", "state": "TX"}))
            completion = await session.complete(
                PromptReference(type="ref/prompt", name="completable-prompt"),
                {"name": "department", "value": "E"},
            )
            out["completion"] = dump(completion)
    return masked(out)


async def langchain(cfg):
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_mcp_adapters.tools import load_mcp_tools
    from langgraph.prebuilt import create_react_agent

    class Scripted(FakeMessagesListChatModel):
        """A chat model that plays a fixed script of tool calls, then answers."""

        def bind_tools(self, tools, **kwargs):
            return self

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            # `pause_before`: the agent stalls before its n-th model turn (so a test can kill it there).
            turns = sum(1 for m in messages if m.type == "ai")
            if cfg.get("pause_before") == turns:
                import time

                time.sleep(600)
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    script = [
        AIMessage(content="", tool_calls=[{"name": n, "args": a, "id": f"call{i}"}])
        for i, (n, a) in enumerate(cfg["calls"])
    ] + [AIMessage(content="done")]
    client = MultiServerMCPClient(
        {"fs": {"transport": "stdio", "command": cfg["command"], "args": cfg["args"]}}
    )

    async def run(tools):
        agent = create_react_agent(Scripted(responses=script), tools)
        state = await agent.ainvoke({"messages": [("user", "work on the files")]})
        def text(content):
            if isinstance(content, str):
                return content
            # Content blocks carry ids made per message: only their text is compared.
            return "\n".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)

        return [
            {"name": m.name, "text": text(m.content), "status": getattr(m, "status", None)}
            for m in state["messages"]
            if m.type == "tool"
        ]

    if cfg.get("held", False):
        async with client.session("fs") as session:
            tools = await load_mcp_tools(session)
            return {"tool_messages": await run(tools), "tools": sorted(t.name for t in tools)}
    tools = await client.get_tools()
    return {"tool_messages": await run(tools), "tools": sorted(t.name for t in tools)}


if __name__ == "__main__":
    mode, cfg = sys.argv[1], json.loads(sys.argv[2])
    result = asyncio.run({"sdk": sdk, "http": http, "tasks": tasks, "survey": survey, "langchain": langchain}[mode](cfg))
    print(json.dumps(result))
