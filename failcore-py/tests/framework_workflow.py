"""A workflow of FailCore tools called through an agent framework: the program test_frameworks.py runs.

    python framework_workflow.py FRAMEWORK schema
    python framework_workflow.py FRAMEWORK run EFFECTS KILL_AT

``schema`` prints the JSON schemas the framework derives from a plain function and from the same function
decorated with ``@failcore.tool``. ``run`` makes STEPS tool calls through the framework's own invocation
path (an agent run driven by the framework's function model where it has one); each execution of the
tool's body leaves a file of its own in EFFECTS, and the body of call KILL_AT kills the process with
SIGKILL right after its file is written. It prints the tool results as the framework delivered them, one
JSON list. The session is the process default one: the environment (FAILCORE_DIR, FAILCORE_RESUME,
FAILCORE_OFFLINE) decides record, resume or offline, as for an unchanged program.
"""

import asyncio
import inspect
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Optional

import failcore

STEPS = 5

# The tools' docstring, from which the frameworks take the tool's description and those of its parameters.
DOC = """Writes one note of the workflow.

Args:
    step: the step's number, from 1
    text: what the note says
    tags: labels for the note
    folder: where the note belongs
"""


def note_tools(effects: Path, kill_at: int):
    """The tool as a plain function and as an ``async def``, both undecorated."""

    def write_note(
        step: int, text: str, tags: Optional[list[str]] = None, folder: Path = Path("notes")
    ) -> str:
        (effects / ("step-%02d-%s" % (step, uuid.uuid4().hex))).write_text(text)
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return "note %d (%s) written by %d" % (step, text, os.getpid())

    async def write_note_async(
        step: int, text: str, tags: Optional[list[str]] = None, folder: Path = Path("notes")
    ) -> str:
        await asyncio.sleep(0)
        return write_note(step, text, tags, folder)

    write_note_async.__name__ = write_note_async.__qualname__ = "write_note"
    write_note.__doc__ = write_note_async.__doc__ = DOC
    return write_note, write_note_async


# Annotations written as text, as `from __future__ import annotations` leaves them (CrewAI resolves none,
# decorated or not: its schema is compared with real annotations only).
def write_note_text_annotations(
    step: "int", text: "str", tags: "Optional[list[str]]" = None, folder: "Path" = Path("notes")
) -> "str":
    raise AssertionError("only its schema is read")


async def text_annotations_async(
    step: "int", text: "str", tags: "Optional[list[str]]" = None, folder: "Path" = Path("notes")
) -> "str":
    raise AssertionError("only its schema is read")


text_annotations_async.__doc__ = write_note_text_annotations.__doc__ = DOC
text_annotations_async.__name__ = text_annotations_async.__qualname__ = "write_note"
write_note_text_annotations.__name__ = write_note_text_annotations.__qualname__ = "write_note"


def arguments(step):
    return {"step": step, "text": "note %d" % step, "tags": ["t%d" % step]}


# ---------------------------------------------------------------------------------------------------
# One function per framework: (the schema it derives from a function, the workflow's tool results).


def crewai(plain, asynchronous):
    from crewai.tools import tool

    def schema(fn):
        t = tool("write_note")(fn)
        return {"schema": t.args_schema.model_json_schema(), "description": t.description}

    def run(fn):
        t = tool("write_note")(fn)
        return [t.run(**arguments(n)) for n in range(1, STEPS + 1)]

    return schema, run, plain


def langchain(plain, asynchronous):
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    def schema(fn):
        return convert_to_openai_tool(tool(fn))

    def run(fn):
        t = tool(fn)
        return [t.invoke(arguments(n)) for n in range(1, STEPS + 1)]

    return schema, run, plain


def autogen(plain, asynchronous):
    from autogen_core import CancellationToken
    from autogen_core.tools import FunctionTool

    def schema(fn):
        return dict(FunctionTool(fn, description="Writes one note.").schema)

    def run(fn):
        t = FunctionTool(fn, description="Writes one note.")

        async def calls():
            return [await t.run_json(arguments(n), CancellationToken()) for n in range(1, STEPS + 1)]

        return asyncio.run(calls())

    return schema, run, asynchronous


def openai_agents(plain, asynchronous):
    from agents import Agent, ModelResponse, Runner, Usage, function_tool, set_tracing_disabled
    from agents.models.interface import Model
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    set_tracing_disabled(True)

    class Scripted(Model):
        """Asks for one tool call per turn, then answers with the tool results it was given."""

        results = None

        async def get_response(self, system_instructions, input, *args, **kwargs):
            outputs = [
                item["output"]
                for item in (input if isinstance(input, list) else [])
                if isinstance(item, dict) and item.get("type") == "function_call_output"
            ]
            if len(outputs) < STEPS:
                n = len(outputs) + 1
                item = ResponseFunctionToolCall(
                    type="function_call",
                    name="write_note",
                    call_id="call-%d" % n,
                    arguments=json.dumps(arguments(n)),
                )
            else:
                Scripted.results = outputs
                item = ResponseOutputMessage(
                    id="done",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[ResponseOutputText(type="output_text", text="done", annotations=[])],
                )
            return ModelResponse(output=[item], usage=Usage(), response_id=None)

        def stream_response(self, *args, **kwargs):
            raise NotImplementedError

    def schema(fn):
        t = function_tool(fn)
        return {"name": t.name, "description": t.description, "parameters": t.params_json_schema}

    def run(fn):
        agent = Agent(
            name="notes", instructions="Write the notes.", tools=[function_tool(fn)], model=Scripted()
        )
        Runner.run_sync(agent, "Write five notes.", max_turns=STEPS + 2)
        return Scripted.results

    return schema, run, asynchronous


def pydantic_ai(plain, asynchronous):
    from pydantic_ai import Agent, Tool
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import FunctionModel

    def returns(messages):
        return [
            part.content for message in messages for part in message.parts if isinstance(part, ToolReturnPart)
        ]

    def script(messages, info):
        done = returns(messages)
        if len(done) < STEPS:
            return ModelResponse(parts=[ToolCallPart("write_note", arguments(len(done) + 1))])
        return ModelResponse(parts=[TextPart("done")])

    def schema(fn):
        t = Tool(fn)
        return {"name": t.name, "description": t.description, "parameters": t.function_schema.json_schema}

    def run(fn):
        agent = Agent(FunctionModel(script), tools=[Tool(fn)])
        result = agent.run_sync("Write five notes.")
        return returns(result.all_messages())

    return schema, run, plain


FRAMEWORKS = {
    "crewai": crewai,
    "langchain": langchain,
    "autogen": autogen,
    "openai_agents": openai_agents,
    "pydantic_ai": pydantic_ai,
}


def main():
    framework, mode = sys.argv[1], sys.argv[2]
    if mode == "schema":
        plain, asynchronous = note_tools(Path("unused"), 0)
        schema, _, fn = FRAMEWORKS[framework](plain, asynchronous)
        out = {"plain": schema(fn), "decorated": schema(failcore.tool(effect="write")(fn))}
        if framework != "crewai":
            text = text_annotations_async if inspect.iscoroutinefunction(fn) else write_note_text_annotations
            out["text_annotations"] = schema(failcore.tool(effect="write")(text))
        print(json.dumps(out))
        return
    effects, kill_at = Path(sys.argv[3]), int(sys.argv[4])
    plain, asynchronous = note_tools(effects, kill_at)
    _, run, fn = FRAMEWORKS[framework](plain, asynchronous)
    print(json.dumps(run(failcore.tool(effect="write")(fn))))


if __name__ == "__main__":
    main()
