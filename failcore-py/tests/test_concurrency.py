import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import failcore
from conftest import show


def test_threads_call_tools_concurrently_and_resume(store):
    ran = []
    lock = threading.Lock()

    @failcore.tool
    def work(worker: int, i: int):
        with lock:
            ran.append((worker, i))
        return {"w": worker, "i": i, "thread": threading.get_ident() != 0}

    def worker(w):
        return [work(w, i) for i in range(5)]

    with failcore.session(dir=store) as s:
        # Threads do not inherit context variables: the one open session is theirs.
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(worker, range(8)))
        run = s.run_id
    assert len(ran) == 40
    assert results[3][4] == {"w": 3, "i": 4, "thread": True}
    _, steps, _ = show(store, run)
    assert len(steps) == 40 and all(st["status"] == "ok" for st in steps)

    ran.clear()
    with failcore.session(dir=store, resume="last"):
        with ThreadPoolExecutor(8) as pool:
            again = list(pool.map(worker, range(8)))
    assert again == results
    assert ran == []


def test_with_two_sessions_open_a_thread_without_context_is_refused(store, tmp_path):
    @failcore.tool
    def t():
        return 1

    errors = []

    def call():
        try:
            t()
        except failcore.OutsideSession as e:
            errors.append(e)

    with failcore.session(dir=store):
        with failcore.session(dir=tmp_path / "other"):
            th = threading.Thread(target=call)
            th.start()
            th.join()
            # With the context carried, the call goes where the caller is.
            ctx = contextvars.copy_context()
            th = threading.Thread(target=ctx.run, args=(t,))
            th.start()
            th.join()
    assert len(errors) == 1


def test_asyncio_tasks_call_sync_and_async_tools_concurrently(store):
    ran = []

    @failcore.tool
    async def slow(i: int):
        await asyncio.sleep(0.01 * (i % 3))
        ran.append(i)
        return i * i

    @failcore.tool
    def quick(i: int):
        ran.append(-i)
        return -i

    async def main():
        async with failcore.session(dir=store) as s:
            outs = await asyncio.gather(*(slow(i) for i in range(20)))
            assert quick(3) == -3
            return s.run_id, outs

    run, outs = asyncio.run(main())
    assert outs == [i * i for i in range(20)]
    assert sorted(ran) == sorted(list(range(20)) + [-3])
    _, steps, _ = show(store, run)
    assert len(steps) == 21

    ran.clear()

    async def again():
        async with failcore.session(dir=store, offline="last"):
            return await asyncio.gather(*(slow(i) for i in range(20)))

    assert asyncio.run(again()) == outs
    assert ran == []
