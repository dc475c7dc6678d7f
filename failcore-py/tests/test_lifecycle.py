import json

import pytest

import failcore
from conftest import cli, refused_output_is_recorded_failed, show


def test_a_call_is_recorded_and_shown_by_the_command(store):
    ran = []

    @failcore.tool(effect="write", version="1")
    def add(a: int, b: int = 2):
        ran.append((a, b))
        return {"sum": a + b, "items": [a, b, 1.5, None, True, "é"]}

    with failcore.session(dir=store) as s:
        out = add(40)
        assert out == {"sum": 42, "items": [40, 2, 1.5, None, True, "é"]}
        run = s.run_id
    assert ran == [(40, 2)]
    assert s.summary["counts"]["ok"] == 1
    assert s.summary["status"] == "ok"

    head, steps, end = show(store, run)
    assert head["run"] == run
    assert [(st["tool"], st["status"]) for st in steps] == [("add", "ok")]
    # Arguments bound by name, the default included.
    assert steps[0]["args"] == {"a": 40, "b": 2}
    assert steps[0]["output"] == out
    assert end and end[0]["status"] == "ok"
    assert "ok" in cli(store, "verify", run).stdout.lower()


def test_resume_serves_recorded_calls_without_running_them(store):
    ran = []

    @failcore.tool
    def fetch(url: str):
        ran.append(url)
        return {"url": url, "n": len(ran), "f": 0.1 + 0.2}

    with failcore.session(dir=store):
        first = [fetch("a"), fetch("b"), fetch("a")]
    assert len(ran) == 3

    with failcore.session(dir=store, resume="last") as s:
        again = [fetch("a"), fetch("b"), fetch("a"), fetch("c")]
        run = s.run_id
    # The three recorded calls are served bit for bit, in occurrence order; only the new one ran.
    assert again[:3] == first
    assert type(again[0]["f"]) is float and again[0]["f"] == 0.1 + 0.2
    assert ran == ["a", "b", "a", "c"]
    _, steps, _ = show(store, run)
    assert [st["status"] for st in steps] == ["replayed", "replayed", "replayed", "ok"]
    assert s.summary["counts"]["replayed"] == 3


def test_offline_replays_with_nothing_executed_and_a_miss_raises(store):
    ran = []

    @failcore.tool(effect="network")
    def get(key: str):
        ran.append(key)
        return key.upper()

    with failcore.session(dir=store):
        assert get("x") == "X"
    ran.clear()

    with failcore.session(dir=store, offline="last"):
        assert get("x") == "X"
        with pytest.raises(failcore.ReplayMiss) as miss:
            get("never recorded")
    assert ran == []
    assert miss.value.tool == "get"
    assert miss.value.kind == "replay_miss"


def test_an_exception_in_a_tool_is_recorded_as_failed_and_raised_again(store):
    class Boom(ValueError):
        pass

    calls = []

    @failcore.tool
    def flaky(n: int):
        calls.append(n)
        if len(calls) == 1:
            raise Boom("first try fails")
        return n

    with failcore.session(dir=store) as s:
        with pytest.raises(Boom, match="first try fails"):
            flaky(1)
        run = s.run_id
    _, steps, _ = show(store, run)
    assert steps[0]["status"] == "failed"
    assert "Boom" in steps[0]["error"] and "first try fails" in steps[0]["error"]

    # A failure is never served: on resume the call runs again.
    with failcore.session(dir=store, resume="last"):
        assert flaky(1) == 1
    assert calls == [1, 1]


@pytest.mark.parametrize(
    "value, what",
    [
        ((1, 2), "tuple"),
        ({1, 2}, "set"),
        (b"x", "bytes"),
        (__import__("datetime").datetime(2024, 1, 1), "datetime.datetime"),
        ({1: "a"}, "key of type int"),
        (float("nan"), "nan"),
        (2**70, "64-bit"),
        ([{"deep": (1,)}], "tuple"),
    ],
)
def test_arguments_json_cannot_give_back_are_refused_naming_the_parameter(store, value, what):
    ran = []

    @failcore.tool
    def t(first: str, payload):
        ran.append(payload)

    with failcore.session(dir=store):
        with pytest.raises(TypeError) as e:
            t("ok", payload=value)
    assert "`payload`" in str(e.value) and what in str(e.value)
    assert ran == []


def test_a_dataclass_argument_is_refused(store):
    import dataclasses

    @dataclasses.dataclass
    class Point:
        x: int

    @failcore.tool
    def t(p):
        return 1

    with failcore.session(dir=store):
        with pytest.raises(TypeError, match="`p`.*Point"):
            t(Point(1))


def _unfit_values():
    """Values JSON would not give back as they are, and what the refusal names."""
    import dataclasses
    import datetime

    @dataclasses.dataclass
    class Point:
        x: int

    values = [
        ((1, 2), "tuple"),
        ({1, 2}, "set"),
        (frozenset([1]), "frozenset"),
        (b"x", "bytes"),
        (datetime.datetime(2024, 1, 1), "datetime.datetime"),
        (datetime.date(2024, 1, 1), "datetime.date"),
        (Point(1), "Point"),
        ({"nested": [1, (2,)]}, "tuple"),
    ]
    try:
        import pydantic
    except ImportError:
        return values

    class Model(pydantic.BaseModel):
        x: int

    return values + [(Model(x=1), "Model")]


UNFIT = _unfit_values()


@pytest.mark.parametrize("value, what", UNFIT, ids=[w for _, w in UNFIT])
def test_an_unfit_argument_of_each_type_is_refused_before_the_body(store, value, what):
    ran = []

    @failcore.tool
    def t(p):
        ran.append(p)

    with failcore.session(dir=store) as s:
        with pytest.raises(TypeError, match="`p` cannot be recorded") as e:
            t(value)
    assert what in str(e.value)
    assert ran == []
    # Refused before the lifecycle: nothing was recorded.
    assert s.summary["counts"].get("ok", 0) == 0 and s.summary["counts"].get("failed", 0) == 0


@pytest.mark.parametrize("value, what", UNFIT, ids=[w for _, w in UNFIT])
def test_an_unfit_output_of_each_type_is_refused_and_recorded_failed(store, value, what):
    ran = []

    @failcore.tool
    def make():
        ran.append(1)
        return value

    refused_output_is_recorded_failed(store, make, what)
    assert ran == [1]
    # Never served as something else: resuming runs it again.
    with failcore.session(dir=store, resume="last"):
        with pytest.raises(TypeError):
            make()
    assert ran == [1, 1]


@pytest.mark.parametrize("value, what", UNFIT[:4], ids=[w for _, w in UNFIT[:4]])
def test_an_unfit_output_of_an_async_tool_is_recorded_failed(store, value, what):
    import asyncio

    @failcore.tool
    async def make():
        return value

    async def main():
        async with failcore.session(dir=store) as s:
            with pytest.raises(TypeError, match="output.*" + what):
                await make()
        return s

    s = asyncio.run(main())
    _, steps, _ = show(store, s.run_id)
    assert steps[0]["status"] == "failed"


def test_skip_leaves_a_parameter_out_of_the_fingerprint(store):
    ran = []

    class Client:
        pass

    @failcore.tool(skip=["client"])
    def query(client, q: str):
        ran.append(q)
        return q * 2

    with failcore.session(dir=store) as s:
        query(Client(), "ab")
        run = s.run_id
    with failcore.session(dir=store, resume="last"):
        # A different client, the same call: served.
        assert query(Client(), "ab") == "abab"
    assert ran == ["ab"]
    _, steps, _ = show(store, run)
    assert steps[0]["args"] == {"q": "ab"}


def test_methods_leave_self_out(store):
    ran = []

    class Repo:
        def __init__(self, name):
            self.name = name

        @failcore.tool(effect="read")
        def read(self, path: str):
            ran.append((self.name, path))
            return self.name + ":" + path

    with failcore.session(dir=store) as s:
        assert Repo("a").read("x") == "a:x"
        run = s.run_id
    _, steps, _ = show(store, run)
    assert steps[0]["tool"] == "Repo.read"
    assert steps[0]["args"] == {"path": "x"}
    with failcore.session(dir=store, resume="last"):
        assert Repo("b").read("x") == "a:x"
    assert ran == [("a", "x")]


def test_version_and_replay_never_make_a_call_run_again(store):
    ran = []

    def make(version):
        @failcore.tool(name="counted", version=version)
        def counted():
            ran.append(version)
            return len(ran)

        return counted

    @failcore.tool(replay="never")
    def clock():
        ran.append("clock")
        return len(ran)

    with failcore.session(dir=store):
        make("1")()
        clock()
    with failcore.session(dir=store, resume="last"):
        make("1")()  # served
        make("2")()  # another contract version: runs
        clock()  # never replayed
    assert ran == ["1", "clock", "2", "clock"]


def test_redacted_arguments_are_not_stored_in_clear(store):
    @failcore.tool(redact=["token"])
    def login(user: str, token: str):
        return user

    with failcore.session(dir=store) as s:
        login("ann", "hunter2-very-secret")
        run = s.run_id
    trace = (store / "runs" / (run + ".jsonl")).read_text()
    assert "hunter2-very-secret" not in trace
    assert "ann" in trace


def test_nested_calls_are_recorded_under_their_parent(store):
    @failcore.tool
    def inner(x: int):
        return x + 1

    @failcore.tool
    def outer(x: int):
        return inner(x) + inner(x + 10)

    with failcore.session(dir=store) as s:
        assert outer(1) == 2 + 12
        run = s.run_id
    _, steps, _ = show(store, run)
    by_tool = {}
    for st in steps:
        by_tool.setdefault(st["tool"], []).append(st)
    parent = by_tool["outer"][0]["step"]
    assert [st["parent"] for st in by_tool["inner"]] == [parent, parent]


def test_the_default_session_is_used_outside_any_session(tmp_path):
    from conftest import clean_env, run_script

    store = tmp_path / "d"
    program = (
        "import failcore\n"
        "@failcore.tool\n"
        "def f(x: int):\n"
        "    return x * 3\n"
        "print(f(5))\n"
    )
    p = run_script(program, clean_env(FAILCORE_DIR=store))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "15"
    listing = json.loads(cli(store, "list", "--json").stdout)
    runs = listing["runs"]
    assert len(runs) == 1
    # The interpreter's exit finished the run.
    assert runs[0]["status"] == "ok"
