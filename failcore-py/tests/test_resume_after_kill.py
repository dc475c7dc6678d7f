"""A real Python process killed with SIGKILL at call 9 of 10 resumes with calls 1-8 served."""

import json
import os
import signal

from conftest import cli, clean_env, executions, run_script, show

WORKFLOW = r'''
import os, signal, sys, uuid
import failcore

effects = sys.argv[1]
kill_at = int(sys.argv[2])

@failcore.tool(effect="write")
def step(n: int):
    # Each execution leaves its own file: executions are counted by files.
    with open(os.path.join(effects, "step-%02d-%s" % (n, uuid.uuid4().hex)), "w") as f:
        f.write(str(n))
    if n == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"step": n, "pid": os.getpid()}

print(" ".join(str(step(n)["pid"]) for n in range(1, 11)))
'''


def test_a_killed_workflow_resumes_with_completed_calls_served(tmp_path):
    store = tmp_path / ".failcore"
    effects = tmp_path / "effects"
    effects.mkdir()

    # Run 1: an unchanged program (no session in its code), killed at call 9.
    first = run_script(
        "import sys; sys.argv = ['w', %r, '9']\n" % str(effects) + WORKFLOW,
        clean_env(FAILCORE_DIR=store),
    )
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert executions(effects) == {n: 1 for n in range(1, 10)}

    # Run 2: the same program, resumed from the environment.
    second = run_script(
        "import sys; sys.argv = ['w', %r, '0']\n" % str(effects) + WORKFLOW,
        clean_env(FAILCORE_DIR=store, FAILCORE_RESUME="last"),
    )
    assert second.returncode == 0, second.stderr
    counts = executions(effects)
    # Calls 1-8 were served from the trace: their side effects did not happen again.
    assert {n: counts[n] for n in range(1, 9)} == {n: 1 for n in range(1, 9)}
    # Call 9 was in flight when the process died: it ran again; call 10 ran once.
    assert counts[9] == 2 and counts[10] == 1
    # The served outputs are run 1's: its process id, for calls 1-8.
    pids = second.stdout.split()
    assert len(set(pids[:8])) == 1 and pids[8] == pids[9] != pids[0]

    listing = json.loads(cli(store, "list", "--json").stdout)["runs"]
    assert len(listing) == 2
    resumed, crashed = listing
    assert crashed["status"] in ("incomplete", "crashed")
    assert resumed["resumed_from"] == crashed["run"]
    assert resumed["status"] == "ok"
    _, steps, _ = show(store, resumed["run"])
    assert [s["status"] for s in steps] == ["replayed"] * 8 + ["ok", "ok"]

    # Offline: the whole workflow replays with nothing executed, the same outputs.
    before = executions(effects)
    third = run_script(
        "import sys; sys.argv = ['w', %r, '0']\n" % str(effects) + WORKFLOW,
        clean_env(FAILCORE_DIR=store, FAILCORE_OFFLINE="last"),
    )
    assert third.returncode == 0, third.stderr
    assert executions(effects) == before
    assert third.stdout.split() == second.stdout.split()
    assert cli(store, "verify", "last").returncode == 0
