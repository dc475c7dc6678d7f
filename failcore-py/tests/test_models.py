"""Pydantic models as arguments and outputs: recorded as their fields where the annotation names the class,
given back rebuilt as that class, refused (before the body, or recorded failed) where that is not exact."""

import asyncio
import datetime
import os

import pytest

import failcore
from conftest import refused_output_is_recorded_failed, show

try:
    import pydantic
except ImportError:
    if os.environ.get("FAILCORE_REQUIRE_FRAMEWORKS") == "1":
        raise
    pytest.skip(
        "SKIPPED: pydantic is not installed (.ci/run installs it with the frameworks)",
        allow_module_level=True,
    )


class Point(pydantic.BaseModel):
    x: int
    label: str = ""
    tags: list[str] = []


class Box(pydantic.BaseModel):
    corner: Point
    size: float


class Stamped(pydantic.BaseModel):
    at: datetime.datetime


class Doubled(pydantic.BaseModel):
    n: int

    @pydantic.field_validator("n")
    @classmethod
    def double(cls, n):
        return n * 2


class Point3(Point):
    z: int = 0


def test_a_model_argument_is_fingerprinted_by_its_fields_and_the_body_gets_the_model(store):
    seen = []

    @failcore.tool
    def move(p: Point, by: int) -> int:
        seen.append(p)
        return p.x + by

    with failcore.session(dir=store) as s:
        assert move(Point(x=1, tags=["a"]), 2) == 3
        run = s.run_id
    assert type(seen[0]) is Point
    _, steps, _ = show(store, run)
    assert steps[0]["args"] == {"p": {"x": 1, "label": "", "tags": ["a"]}, "by": 2}

    with failcore.session(dir=store, resume="last") as s:
        assert move(Point(x=1, tags=["a"]), 2) == 3  # the same fields: served
        assert move(Point(x=1, tags=["b"]), 2) == 3  # other fields: another call, executed
    assert len(seen) == 2 and seen[1].tags == ["b"]
    assert s.summary["counts"]["replayed"] == 1


def test_a_model_output_is_given_back_as_the_annotated_class(store):
    ran = []

    @failcore.tool
    def measure(n: int) -> Box:
        ran.append(n)
        return Box(corner=Point(x=n, label="c"), size=0.1 + 0.2)

    with failcore.session(dir=store) as s:
        live = measure(3)
        run = s.run_id
    assert type(live) is Box and live == Box(corner=Point(x=3, label="c"), size=0.1 + 0.2)
    _, steps, _ = show(store, run)
    assert steps[0]["output"] == {"corner": {"x": 3, "label": "c", "tags": []}, "size": 0.1 + 0.2}

    with failcore.session(dir=store, resume="last"):
        served = measure(3)
    with failcore.session(dir=store, offline="last"):
        offline = measure(3)
    assert ran == [3]
    assert type(served) is Box and type(offline) is Box
    assert served == live == offline
    assert type(served.corner) is Point


def test_a_model_output_of_an_async_tool_is_given_back_as_the_annotated_class(store):
    ran = []

    @failcore.tool
    async def locate(n: int) -> Point:
        ran.append(n)
        return Point(x=n)

    async def main(**mode):
        async with failcore.session(dir=store, **mode):
            return await locate(5)

    live = asyncio.run(main())
    served = asyncio.run(main(resume="last"))
    assert ran == [5]
    assert type(served) is Point and served == live == Point(x=5)


@pytest.mark.parametrize(
    "make, what",
    [
        (lambda: Stamped(at=datetime.datetime(2024, 1, 1)), "datetime"),  # a field JSON does not give back
        (lambda: Doubled(n=2), "is not equal"),  # rebuilding it validates again: n would be 8
        (lambda: {"at": "2024-01-01T00:00:00"}, "return a Stamped"),  # a dict served back as a model
        (lambda: Point3(x=1), "return a Stamped"),  # a subclass rebuilt as the annotated class
    ],
)
def test_a_model_output_that_would_not_come_back_equal_is_refused_and_recorded_failed(store, make, what):
    ran = []
    annotation = Doubled if what == "is not equal" else Stamped

    def body() -> annotation:
        ran.append(1)
        return make()

    refused_output_is_recorded_failed(store, failcore.tool(name="make")(body), what)
    assert ran == [1]


def test_a_model_argument_the_annotation_does_not_name_is_refused_before_the_body(store):
    ran = []

    @failcore.tool
    def plain(p, q: Point = None):
        ran.append(p)

    @failcore.tool
    def stamped(s: Stamped):
        ran.append(s)

    with failcore.session(dir=store) as s:
        with pytest.raises(TypeError, match="`p` cannot be recorded.*pydantic model.*annotation"):
            plain(Point(x=1))
        with pytest.raises(TypeError, match="`q` cannot be recorded.*Point3"):
            plain(1, Point3(x=1))  # a subclass: not the class the annotation names
        with pytest.raises(TypeError, match="`s` cannot be recorded.*datetime"):
            stamped(Stamped(at=datetime.datetime(2024, 1, 1)))
    assert ran == []
    assert s.summary["counts"]["ok"] == 0 and s.summary["counts"]["failed"] == 0
