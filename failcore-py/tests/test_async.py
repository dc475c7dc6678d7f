import asyncio

import pytest

import failcore
from conftest import show


def test_async_tools_record_resume_and_replay_offline(store):
    ran = []

    @failcore.tool(effect="network")
    async def fetch(url: str):
        await asyncio.sleep(0)
        ran.append(url)
        return {"url": url, "len": len(url)}

    async def main(**opts):
        async with failcore.session(dir=store, **opts) as s:
            return s.run_id, [await fetch("a"), await fetch("bb")]

    run1, first = asyncio.run(main())
    assert first == [{"url": "a", "len": 1}, {"url": "bb", "len": 2}]
    assert ran == ["a", "bb"]
    run2, second = asyncio.run(main(resume="last"))
    assert second == first and ran == ["a", "bb"]
    _, steps, _ = show(store, run2)
    assert [st["status"] for st in steps] == ["replayed", "replayed"]

    async def miss():
        async with failcore.session(dir=store, offline=run1):
            assert await fetch("a") == first[0]
            await fetch("zzz")

    with pytest.raises(failcore.ReplayMiss):
        asyncio.run(miss())
    assert ran == ["a", "bb"]


def test_an_exception_in_an_async_tool_is_recorded_and_raised_again(store):
    class Upstream(RuntimeError):
        pass

    @failcore.tool
    async def call_api():
        await asyncio.sleep(0)
        raise Upstream("503")

    async def main():
        with failcore.session(dir=store) as s:
            with pytest.raises(Upstream, match="503"):
                await call_api()
            return s.run_id

    run = asyncio.run(main())
    _, steps, _ = show(store, run)
    assert steps[0]["status"] == "failed" and "Upstream: 503" in steps[0]["error"]


def test_async_methods_and_nested_calls(store):
    ran = []

    @failcore.tool
    def parse(text: str):
        ran.append("parse")
        return text.split()

    class Agent:
        def __init__(self):
            self.loop_thread = None

        @failcore.tool
        async def search(self, q: str):
            ran.append("search")
            self.loop_thread = asyncio.get_running_loop()
            words = parse(q)  # a sync tool from inside an async one
            more = await self.count(words)  # an async tool from inside an async one
            return {"words": words, "count": more}

        @failcore.tool
        async def count(self, words: list):
            ran.append("count")
            return len(words)

    async def main(**opts):
        with failcore.session(dir=store, **opts) as s:
            return s.run_id, await Agent().search("a b c")

    run, out = asyncio.run(main())
    assert out == {"words": ["a", "b", "c"], "count": 3}
    assert ran == ["search", "parse", "count"]
    _, steps, _ = show(store, run)
    tools = {st["tool"]: st for st in steps}
    assert set(tools) == {"Agent.search", "parse", "Agent.count"}
    assert tools["parse"]["parent"] == tools["Agent.search"]["step"]
    assert tools["Agent.count"]["parent"] == tools["Agent.search"]["step"]
    assert tools["Agent.search"]["args"] == {"q": "a b c"}

    ran.clear()
    _, again = asyncio.run(main(resume="last"))
    assert again == out and ran == []


def test_a_blocked_async_call_raises_blocked(store):
    @failcore.tool(policy="fs_read_only", effect="write", paths=["path"])
    async def write(path: str):
        raise AssertionError("the body must not run")

    async def main():
        with failcore.session(dir=store, sandbox=store.parent):
            await write("x.txt")

    with pytest.raises(failcore.Blocked) as e:
        asyncio.run(main())
    assert e.value.policy == "fs_read_only"


def test_cancelling_the_caller_cancels_the_call(store):
    started = asyncio.Event

    @failcore.tool
    async def forever():
        await asyncio.sleep(3600)

    async def main():
        with failcore.session(dir=store) as s:
            task = asyncio.ensure_future(forever())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.2)
            return s.run_id

    run = asyncio.run(main())
    _, steps, _ = show(store, run)
    assert [st["status"] for st in steps] == ["cancelled"]
