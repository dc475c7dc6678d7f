"""The MCP proxy served in process: one agent's Python tools, MCP tools and model calls are one run.

An agent (a real process) opens ``failcore.session()`` and, in it, an MCP client (the official ``mcp`` SDK,
Streamable HTTP) on ``s.mcp_proxy(command=[node, <the official filesystem server>, <root>])`` and an
``openai`` client on ``s.llm_proxy(upstream=...)`` (a scripted Chat Completions API on 127.0.0.1, counting
its requests). Each round asks the model, writes the answer to a file through the filesystem server's
``write_file``, and calls a ``@failcore.tool`` that leaves a file of its own. The agent is killed with
SIGKILL inside the Python tool of round 2 (step 7 of 10). Resumed with ``FAILCORE_RESUME=last``: the model
calls, the MCP calls and the Python tool of before are served from the trace (the upstream is not asked
again, the filesystem server writes none of their files again, the Python tool leaves no file). Replayed
with ``FAILCORE_OFFLINE=last``, with the upstream stopped and ``node`` not on the PATH, nothing executes
and no server starts: the recorded server description answers ``initialize`` and ``tools/list``.

Skips, saying why, without the filesystem server (``FAILCORE_E2E_FS_SERVER``), ``node``, ``mcp`` or
``openai``, unless ``FAILCORE_REQUIRE_FRAMEWORKS=1`` (then it fails); ``.ci/run`` installs them, pinned.
"""

import json
import os
import shutil
import signal
import socket

import pytest

import failcore
from conftest import clean_env, cli, executions, resumed_run, run_script, show
from test_llm_proxy import Upstream, require_openai

ROUNDS = 3
KILL_AT = 2

AGENT = r'''
import asyncio, json, os, signal, sys, uuid
import failcore
import openai
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

effects, root, kill_at, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
server = sys.argv[5:]

@failcore.tool(effect="write")
def note(n: int, answer: str) -> dict:
    # Each execution leaves its own file: executions are counted by files.
    with open(os.path.join(effects, "step-%02d-%s" % (n, uuid.uuid4().hex)), "w") as f:
        f.write(answer)
    if n == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"n": n, "pid": os.getpid()}

async def agent(s):
    mcp_url = s.mcp_proxy(command=server)
    assert s.mcp_proxy(command=server) == mcp_url
    model = openai.OpenAI(base_url=s.llm_proxy(upstream=os.environ.get("UPSTREAM")),
                          api_key="sk-test-key", max_retries=0)
    results = []
    async with streamable_http_client(mcp_url) as (read, write, _):
        async with ClientSession(read, write) as mcp:
            await mcp.initialize()
            tools = sorted(t.name for t in (await mcp.list_tools()).tools)
            assert "write_file" in tools, tools
            done = None
            for n in range(1, rounds + 1):
                reply = model.chat.completions.create(
                    model="gpt-test",
                    messages=[{"role": "user", "content": "round %d after %s" % (n, json.dumps(done))}],
                )
                answer = reply.choices[0].message.content
                wrote = await mcp.call_tool(
                    "write_file", {"path": os.path.join(root, "note-%d.txt" % n), "content": answer}
                )
                assert not wrote.isError, wrote
                done = note(n, answer)
                results.append({"answer": answer, "wrote": wrote.content[0].text, "pid": done["pid"]})
    return results

with failcore.session() as s:
    print(json.dumps(asyncio.run(agent(s))))
'''


def require(what, found, why):
    if found:
        return
    if os.environ.get("FAILCORE_REQUIRE_FRAMEWORKS") == "1":
        pytest.fail("FAILCORE_REQUIRE_FRAMEWORKS=1 but %s: %s" % (what, why))
    pytest.skip("SKIPPED: %s (%s); bash .ci/run installs it" % (what, why))


def fs_server():
    """The official filesystem server's entry point and the `node` that runs it."""
    server = os.environ.get("FAILCORE_E2E_FS_SERVER", "")
    require(
        "the MCP filesystem server is not found",
        os.path.isfile(server),
        "FAILCORE_E2E_FS_SERVER=%r" % server,
    )
    node = shutil.which("node")
    require("node is not found", node, "not on the PATH")
    try:
        import mcp  # noqa: F401
    except ImportError as e:
        require("the mcp SDK is not importable", False, e)
    require_openai()
    return node, server


def written(root):
    """The files the filesystem server wrote (and took them away, to count the next run's)."""
    names = sorted(os.listdir(root))
    for name in names:
        os.remove(os.path.join(root, name))
    return names


def test_python_tools_mcp_tools_and_model_calls_resume_in_one_run(tmp_path):
    node, server = fs_server()
    store = tmp_path / ".failcore"
    effects = tmp_path / "effects"
    root = tmp_path / "root"
    effects.mkdir()
    root.mkdir()
    # The server's command is `node` found on the PATH: offline, without it, no server can start.
    nodes = tmp_path / "bin"
    nodes.mkdir()
    os.symlink(node, nodes / "node")
    command = ["node", server, str(root)]

    def agent(env, kill_at=0):
        argv = ["agent", str(effects), str(root), str(kill_at), str(ROUNDS)] + command
        return run_script("import sys; sys.argv = %r\n" % argv + AGENT, env)

    upstream = Upstream()
    try:
        # Run 1: killed inside the Python tool of round 2 (its step 7).
        env = clean_env(FAILCORE_DIR=store, UPSTREAM=upstream.url, PATH=nodes)
        first = agent(env, KILL_AT)
        assert first.returncode == -signal.SIGKILL, first.stderr
        assert upstream.counts() == {1: 1, 2: 1}
        assert executions(effects) == {1: 1, 2: 1}
        assert written(root) == ["note-1.txt", "note-2.txt"]

        # Run 2: resumed. Round 1 and round 2's model call and MCP call are served.
        env = clean_env(FAILCORE_DIR=store, FAILCORE_RESUME="last", UPSTREAM=upstream.url, PATH=nodes)
        second = agent(env)
        assert second.returncode == 0, second.stderr
        assert upstream.counts() == {1: 1, 2: 1, 3: 1}
        assert written(root) == ["note-3.txt"]
        # The Python tool of round 2 was in flight when the process died: it ran again.
        assert executions(effects) == {1: 1, 2: 2, 3: 1}
        results = json.loads(second.stdout)
        assert [r["answer"] for r in results] == ["answer %d #1" % n for n in range(1, ROUNDS + 1)]
        assert all(str(root / ("note-%d.txt" % n)) in r["wrote"] for n, r in enumerate(results, 1))
        pids = [r["pid"] for r in results]
        assert pids[0] != pids[1] == pids[2]
    finally:
        upstream.stop()

    resumed, steps = resumed_run(store)
    # One run: the model steps, the MCP steps (the server's description recorded at the first) and the
    # Python tool's steps.
    round_ = ["model:gpt-test", "write_file", "note"]
    assert [s["tool"] for s in steps] == (
        ["model:gpt-test", "failcore:mcp_server", "write_file", "note"] + round_ * (ROUNDS - 1)
    )
    assert [s["status"] for s in steps] == ["replayed"] * 6 + ["ok"] * 4
    assert cli(store, "verify", resumed).returncode == 0

    # Offline: the upstream stopped, no `node` on the PATH. Nothing executes, the same results.
    before = executions(effects)
    third = agent(clean_env(FAILCORE_DIR=store, FAILCORE_OFFLINE="last", PATH=tmp_path / "empty"))
    assert third.returncode == 0, third.stderr
    assert "mcp proxy" not in third.stderr, third.stderr
    assert json.loads(third.stdout) == results
    assert executions(effects) == before
    assert written(root) == []
    _, steps, _ = show(store, "last")
    assert [s["status"] for s in steps] == ["replayed"] * (1 + 3 * ROUNDS)
    assert cli(store, "verify", "last").returncode == 0


def test_a_session_serves_one_mcp_proxy_for_each_server(store):
    with failcore.session(dir=store) as s:
        with pytest.raises(failcore.FailcoreError, match="needs its server"):
            s.mcp_proxy()
        with pytest.raises(failcore.FailcoreError, match="not both"):
            s.mcp_proxy(command=["true"], url="http://127.0.0.1:9/mcp")
        with pytest.raises(TypeError, match="a list"):
            s.mcp_proxy(command="node server.js")
        with pytest.raises(failcore.FailcoreError, match="not a URL"):
            s.mcp_proxy(url="not a url")
        url = s.mcp_proxy(command=["true"])
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        assert s.mcp_proxy(command=["true"]) == url
        other = s.mcp_proxy(url="http://127.0.0.1:9/mcp")
        assert other != url
    # Finished: the proxies are stopped, before the run's end was written.
    assert s.summary["status"] == "ok"
    for stopped in (url, other):
        port = int(stopped.split(":")[2].split("/")[0])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
