"""FailCore tools inside agent frameworks: CrewAI, LangChain, AutoGen, the OpenAI Agents SDK, Pydantic AI.

Each framework wraps a function decorated with ``@failcore.tool`` as its users would (``crewai.tools.tool``,
``langchain_core.tools.tool``, ``autogen_core.tools.FunctionTool``, ``agents.function_tool``,
``pydantic_ai.Tool``). The schema the framework derives must be the one it derives from the undecorated
function; a workflow of calls made through the framework (framework_workflow.py, a real process) is killed
with SIGKILL inside the body of call 3, resumed with ``FAILCORE_RESUME=last`` (calls 1 and 2 served from
the trace, not executed: counted by the files their bodies write), then replayed with
``FAILCORE_OFFLINE=last`` (nothing executed, the same results).

A framework that is not importable skips, saying so, unless ``FAILCORE_REQUIRE_FRAMEWORKS=1`` (then it
fails). CrewAI pins an ``openai`` older than the OpenAI Agents SDK's, so it cannot share their
environment: ``FAILCORE_E2E_CREWAI_PYTHON`` names an interpreter that has CrewAI, and the installed
``failcore`` package is given to it on ``PYTHONPATH`` (``.ci/run`` makes that environment).
"""

import json
import os
import signal
import subprocess
import sys

import pytest

import failcore
from conftest import clean_env, cli, executions, show

HERE = os.path.dirname(os.path.abspath(__file__))
WORKFLOW = os.path.join(HERE, "framework_workflow.py")
STEPS = 5
KILL_AT = 3

MODULES = {
    "crewai": "crewai",
    "langchain": "langchain_core",
    "autogen": "autogen_core",
    "openai_agents": "agents",
    "pydantic_ai": "pydantic_ai",
}


def skip_or_fail(framework, why):
    if os.environ.get("FAILCORE_REQUIRE_FRAMEWORKS") == "1":
        pytest.fail("%s: FAILCORE_REQUIRE_FRAMEWORKS=1 but %s" % (framework, why))
    pytest.skip("SKIPPED %s: %s" % (framework, why))


def interpreter(framework, tmp_path):
    """The Python that runs the framework's workflow, and what its environment needs added."""
    if framework == "crewai":
        python = os.environ.get("FAILCORE_E2E_CREWAI_PYTHON")
        if not python:
            skip_or_fail(
                framework,
                "set FAILCORE_E2E_CREWAI_PYTHON to a Python with crewai (CrewAI requires openai<3, the "
                "OpenAI Agents SDK openai>=3: they cannot share one environment; bash .ci/run makes it)",
            )
        # Only the installed failcore package, not the rest of this environment, is added to its path.
        shelf = tmp_path / "shelf"
        shelf.mkdir()
        os.symlink(os.path.dirname(failcore.__file__), os.path.join(shelf, "failcore"))
        extra = {"PYTHONPATH": str(shelf), "CREWAI_DISABLE_TELEMETRY": "true", "OTEL_SDK_DISABLED": "true"}
    else:
        python, extra = sys.executable, {}
    probe = subprocess.run(
        [python, "-c", "import %s" % MODULES[framework]],
        capture_output=True,
        text=True,
        env=clean_env(**extra),
        timeout=300,
    )
    if probe.returncode != 0:
        skip_or_fail(
            framework,
            "%s is not importable by %s (%s); .ci/run installs the pinned version"
            % (MODULES[framework], python, probe.stderr.strip().splitlines()[-1:]),
        )
    return python, extra


def workflow(python, extra, framework, *args, **env):
    return subprocess.run(
        [python, WORKFLOW, framework] + [str(a) for a in args],
        capture_output=True,
        text=True,
        env=clean_env(**extra, **env),
        timeout=300,
    )


def writer(result):
    """The process id a tool result says wrote the note."""
    return int(str(result).rsplit(" ", 1)[-1].strip("\"'"))


@pytest.mark.parametrize("framework", sorted(MODULES))
def test_the_framework_derives_the_same_schema_from_the_decorated_function(framework, tmp_path):
    python, extra = interpreter(framework, tmp_path)
    p = workflow(python, extra, framework, "schema")
    assert p.returncode == 0, p.stderr
    schemas = json.loads(p.stdout.splitlines()[-1])
    assert schemas["decorated"] == schemas["plain"]
    if framework != "crewai":
        # Annotations written as text resolve in the function's module, not the decorator's.
        assert schemas["text_annotations"] == schemas["plain"]
    # The schema is the function's: its parameters and their documented descriptions, not `*args, **kwargs`.
    text = json.dumps(schemas["plain"])
    for name in ("step", "text", "tags", "folder"):
        assert '"%s"' % name in text, (name, text)
    assert "kwargs" not in text


@pytest.mark.parametrize("framework", sorted(MODULES))
def test_a_workflow_through_the_framework_resumes_after_sigkill_and_replays_offline(framework, tmp_path):
    python, extra = interpreter(framework, tmp_path)
    store = tmp_path / ".failcore"
    effects = tmp_path / "effects"
    effects.mkdir()

    # Record: killed inside the body of call 3, right after its side effect.
    first = workflow(python, extra, framework, "run", effects, KILL_AT, FAILCORE_DIR=store)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert executions(effects) == {n: 1 for n in range(1, KILL_AT + 1)}

    # Resume: calls 1 and 2 are served from the trace (their bodies do not run again), 3 to 5 run.
    second = workflow(python, extra, framework, "run", effects, 0, FAILCORE_DIR=store, FAILCORE_RESUME="last")
    assert second.returncode == 0, second.stderr
    counts = executions(effects)
    assert counts == {1: 1, 2: 1, 3: 2, 4: 1, 5: 1}
    results = json.loads(second.stdout.splitlines()[-1])
    assert len(results) == STEPS
    assert ["note %d (note %d)" % (n, n) in str(r) for n, r in enumerate(results, 1)] == [True] * STEPS
    # The served results are the killed process's: written by it, not by this one.
    pids = [writer(r) for r in results]
    assert pids[0] == pids[1] != pids[2] == pids[3] == pids[4]

    listing = json.loads(cli(store, "list", "--json").stdout)["runs"]
    resumed, crashed = listing
    assert resumed["resumed_from"] == crashed["run"]
    _, steps, _ = show(store, resumed["run"])
    assert [(s["tool"], s["status"]) for s in steps] == [("write_note", "replayed")] * 2 + [
        ("write_note", "ok")
    ] * 3
    # The arguments are the ones the framework passed, bound by name (the defaults included).
    assert steps[0]["args"] == {"step": 1, "text": "note 1", "tags": ["t1"], "folder": "notes"}

    # Offline: nothing executed, the same results as the resumed run.
    third = workflow(python, extra, framework, "run", effects, 0, FAILCORE_DIR=store, FAILCORE_OFFLINE="last")
    assert third.returncode == 0, third.stderr
    assert executions(effects) == counts
    assert json.loads(third.stdout.splitlines()[-1]) == results
    assert cli(store, "verify", "last").returncode == 0
