"""The LLM proxy served in process: one agent, its model calls and its Python tools, is one run.

An agent (a real process, an unchanged program: the process default session, from the environment) asks a
model through the official ``openai`` client pointed at ``failcore.llm_proxy(...)``, then calls a
``@failcore.tool`` with the answer, six times over. The upstream is scripted here (``http.server`` on
127.0.0.1, answering Chat Completions, counting the requests for each call). The agent is killed with
SIGKILL inside its fifth tool call (step 10 of 12); resumed with ``FAILCORE_RESUME=last``, steps 1 to 9
(five model calls, four tools) are served from the trace: the upstream is not asked again and the tools'
side effects (files) do not happen again. Replayed with ``FAILCORE_OFFLINE=last`` and the upstream
stopped, nothing executes and nothing reaches the upstream. Model steps and tool steps are in one run.

Without ``openai`` importable, the test skips, saying so, unless ``FAILCORE_REQUIRE_FRAMEWORKS=1`` (then it
fails); ``.ci/run`` installs it, pinned.
"""

import http.server
import json
import os
import signal
import socket
import threading

import pytest

import failcore
from conftest import clean_env, cli, executions, resumed_run, run_script, show

ROUNDS = 6
KILL_AT = 5

AGENT = r'''
import json, os, signal, sys, uuid
import failcore
import openai

effects, kill_at = sys.argv[1], int(sys.argv[2])

@failcore.tool(effect="write")
def act(n: int, answer: str) -> dict:
    # Each execution leaves its own file: executions are counted by files.
    with open(os.path.join(effects, "step-%02d-%s" % (n, uuid.uuid4().hex)), "w") as f:
        f.write(answer)
    if n == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"n": n, "pid": os.getpid(), "answer": answer}

base_url = failcore.llm_proxy(upstream=os.environ.get("UPSTREAM"))
assert failcore.llm_proxy(upstream=os.environ.get("UPSTREAM")) == base_url
client = openai.OpenAI(base_url=base_url, api_key="sk-test-key", max_retries=0)
done = None
results = []
for n in range(1, int(sys.argv[3]) + 1):
    # The question carries the previous tool's output: served outputs ask the same questions again.
    reply = client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "round %d after %s" % (n, json.dumps(done))}],
    )
    done = act(n, reply.choices[0].message.content)
    results.append(done)
print(json.dumps(results))
'''


class Upstream:
    """A scripted OpenAI Chat Completions API on 127.0.0.1: the answer to round N is ``answer N #K``, K
    counting the requests for round N."""

    def __init__(self):
        self.requests = {}
        self.lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path.endswith("/chat/completions"), self.path
                assert self.headers["Authorization"] == "Bearer sk-test-key"
                n = int(body["messages"][-1]["content"].split()[1])
                with upstream.lock:
                    k = upstream.requests[n] = upstream.requests.get(n, 0) + 1
                reply = json.dumps(
                    {
                        "id": "chatcmpl-%d-%d" % (n, k),
                        "object": "chat.completion",
                        "created": 1700000000,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "answer %d #%d" % (n, k)},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/v1" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def counts(self):
        with self.lock:
            return dict(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def require_openai():
    try:
        import openai  # noqa: F401
    except ImportError as e:
        if os.environ.get("FAILCORE_REQUIRE_FRAMEWORKS") == "1":
            pytest.fail("FAILCORE_REQUIRE_FRAMEWORKS=1 but the openai client is not importable: %s" % e)
        pytest.skip("SKIPPED: the openai client is not importable (%s); bash .ci/run installs it" % e)


def agent(effects, kill_at, env):
    argv = ["agent", str(effects), str(kill_at), str(ROUNDS)]
    return run_script("import sys; sys.argv = %r\n" % argv + AGENT, env)


def test_a_killed_agent_resumes_with_model_calls_and_tools_served_in_one_run(tmp_path):
    require_openai()
    store = tmp_path / ".failcore"
    effects = tmp_path / "effects"
    effects.mkdir()
    upstream = Upstream()
    try:
        # Run 1: killed inside the fifth tool call, step 10.
        first = agent(effects, KILL_AT, clean_env(FAILCORE_DIR=store, UPSTREAM=upstream.url))
        assert first.returncode == -signal.SIGKILL, first.stderr
        assert upstream.counts() == {n: 1 for n in range(1, KILL_AT + 1)}
        assert executions(effects) == {n: 1 for n in range(1, KILL_AT + 1)}

        # Run 2: the same program, resumed from the environment.
        env = clean_env(FAILCORE_DIR=store, FAILCORE_RESUME="last", UPSTREAM=upstream.url)
        second = agent(effects, 0, env)
        assert second.returncode == 0, second.stderr
        # Model calls 1-5 were served: the upstream was asked only for round 6.
        assert upstream.counts() == {**{n: 1 for n in range(1, KILL_AT + 1)}, ROUNDS: 1}
        # Tools 1-4 were served; tool 5 was in flight when the process died and ran again.
        counts = executions(effects)
        assert {n: counts[n] for n in range(1, KILL_AT)} == {n: 1 for n in range(1, KILL_AT)}
        assert counts[KILL_AT] == 2 and counts[ROUNDS] == 1
        results = json.loads(second.stdout)
        assert [r["answer"] for r in results] == ["answer %d #1" % n for n in range(1, ROUNDS + 1)]
        pids = [r["pid"] for r in results]
        assert len(set(pids[: KILL_AT - 1])) == 1 and pids[KILL_AT - 1] == pids[ROUNDS - 1] != pids[0]
    finally:
        upstream.stop()

    # One run holds the model steps and the tool steps, alternating.
    resumed, steps = resumed_run(store)
    assert [s["tool"] for s in steps] == ["model:gpt-test", "act"] * ROUNDS
    served = 2 * KILL_AT - 1
    assert [s["status"] for s in steps] == ["replayed"] * served + ["ok"] * (2 * ROUNDS - served)
    assert cli(store, "verify", resumed).returncode == 0

    # Offline, the upstream stopped: nothing executed, nothing asked, the same results.
    before = executions(effects)
    third = agent(effects, 0, clean_env(FAILCORE_DIR=store, FAILCORE_OFFLINE="last"))
    assert third.returncode == 0, third.stderr
    assert executions(effects) == before
    assert json.loads(third.stdout) == results
    assert upstream.counts() == {**{n: 1 for n in range(1, KILL_AT + 1)}, ROUNDS: 1}
    _, steps, _ = show(store, "last")
    assert [s["status"] for s in steps] == ["replayed"] * (2 * ROUNDS)
    assert cli(store, "verify", "last").returncode == 0


def test_a_session_serves_one_proxy_until_it_finishes(store):
    with failcore.session(dir=store) as s:
        with pytest.raises(failcore.FailcoreError, match="upstream="):
            s.llm_proxy()
        url = s.llm_proxy(upstream="http://127.0.0.1:9/v1")
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert s.llm_proxy(upstream="http://127.0.0.1:9/v1") == url
        with pytest.raises(failcore.FailcoreError, match="already serves an LLM proxy"):
            s.llm_proxy(upstream="http://127.0.0.1:10/v1")
        other = failcore.session(dir=store)
        with pytest.raises(failcore.FailcoreError, match="not a URL"):
            other.llm_proxy(upstream="not a url")
        other.finish()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    # Stopped before the run's end was written: the port no longer accepts connections.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()


def test_an_unreadable_model_configuration_is_a_clear_error(store, tmp_path):
    with pytest.raises(failcore.FailcoreError, match="cannot read the model configuration"):
        failcore.session(dir=store, models=tmp_path / "missing.toml").open()
    bad = tmp_path / "models.toml"
    bad.write_text("[[[ not toml")
    with pytest.raises(failcore.FailcoreError):
        failcore.session(dir=store, models=bad).open()


def test_the_session_model_table_guards_the_proxy(store, tmp_path):
    """``failcore.session(models=...)``: a model off its allow-list is refused (403, the rule named) and
    never reaches the upstream; an allowed one is forwarded and recorded in the session's run."""
    require_openai()
    import openai

    table = tmp_path / "models.toml"
    table.write_text('allow = ["gpt-test"]\n')
    upstream = Upstream()
    try:
        with failcore.session(dir=store, models=table) as s:
            url = s.llm_proxy(upstream=upstream.url)
            client = openai.OpenAI(base_url=url, api_key="sk-test-key", max_retries=0)
            ask = client.chat.completions.create
            with pytest.raises(openai.PermissionDeniedError) as refused:
                ask(model="gpt-other", messages=[{"role": "user", "content": "round 1"}])
            assert refused.value.body["type"] == "failcore_blocked"
            assert upstream.counts() == {}
            reply = ask(model="gpt-test", messages=[{"role": "user", "content": "round 2"}])
            assert reply.choices[0].message.content == "answer 2 #1"
    finally:
        upstream.stop()
    _, steps, _ = show(store, s.run_id)
    assert [(st["tool"], st["status"]) for st in steps] == [
        ("model:(not allowed)", "blocked"),
        ("model:gpt-test", "ok"),
    ]
