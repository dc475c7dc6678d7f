import pytest

import failcore
from conftest import show

POLICY = """
[policy.git_only]
preset = "exec"
allow = ["git"]

[policy.workspace]
preset = "fs"
root = "workspace"
base = "workspace"
paths = ["dest"]
"""


@pytest.fixture
def policy_file(tmp_path):
    (tmp_path / "workspace").mkdir()
    p = tmp_path / "failcore.toml"
    p.write_text(POLICY)
    return p


def test_an_exec_policy_from_the_policy_file_blocks_before_the_body(store, policy_file):
    ran = []

    @failcore.tool(policy="git_only", effect="exec")
    def run_command(program: str, args: list):
        ran.append(program)
        return 0

    with failcore.session(dir=store, policy=policy_file) as s:
        assert run_command("git", ["status"]) == 0
        with pytest.raises(failcore.Blocked) as blocked:
            run_command("rm", ["-rf", "/"])
        run = s.run_id
    assert ran == ["git"]
    assert blocked.value.policy == "git_only"
    assert blocked.value.rule.startswith("exec")
    assert blocked.value.tool == "run_command"
    _, steps, _ = show(store, run)
    assert [st["status"] for st in steps] == ["ok", "blocked"]
    assert steps[1]["decision"]["rule"] == blocked.value.rule

    # Blocked again on resume: policy runs in every mode.
    with failcore.session(dir=store, policy=policy_file, resume="last"):
        with pytest.raises(failcore.Blocked):
            run_command("rm", ["-rf", "/"])
    assert ran == ["git"]


def test_an_fs_policy_by_name_refuses_an_escape(store, policy_file, tmp_path):
    import pathlib

    written = []

    @failcore.tool(policy="workspace", effect="write")
    def copy(dest: str, text: str):
        written.append(dest)
        return len(text)

    @failcore.tool(policy="fs_safe", effect="write")
    def save(path: pathlib.Path, text: str):
        written.append(str(path))
        return len(text)

    with failcore.session(dir=store, policy=policy_file, sandbox=tmp_path / "workspace"):
        assert copy("notes.md", "hi") == 2
        with pytest.raises(failcore.Blocked) as escape:
            copy("../../etc/passwd", "x")
        inside = tmp_path / "workspace" / "ok.txt"
        assert save(inside, "abc") == 3
        with pytest.raises(failcore.Blocked):
            save(str(tmp_path / "outside.txt"), "x")
    assert written == ["notes.md", str(inside)]
    assert escape.value.rule.startswith("fs")


def test_an_unknown_policy_name_fails_closed(store):
    ran = []

    @failcore.tool(policy="no_such_policy")
    def t():
        ran.append(1)

    with failcore.session(dir=store):
        with pytest.raises(failcore.FailcoreError):
            t()
    assert ran == []
