"""FailCore for Python: a flight recorder and airbag beneath AI agents.

Decorate a tool with ``@failcore.tool(...)`` and every call is fingerprinted from its arguments, checked
against a policy before the body runs, served from the trace of the run being resumed when it succeeded
there, or executed and committed to the same tamper-evident JSONL trace the Rust crate writes::

    import failcore

    @failcore.tool(policy="fs_safe", effect="write")
    def write_file(path: str, content: str) -> int:
        ...

    with failcore.session(resume="last"):
        write_file("notes.md", "hello")

Without a ``with failcore.session(...)`` block, calls go to the process default session, opened from the
environment (``FAILCORE_DIR``, ``FAILCORE_RESUME``, ``FAILCORE_OFFLINE``, ``FAILCORE_POLICY``, ...) as the
Rust side does, and finished when the interpreter exits: an unchanged program resumes with
``FAILCORE_RESUME=last``.
"""

import asyncio
import atexit
import contextvars
import functools
import inspect
import json
import math
import os
import pathlib
import sys
import threading
import typing

from . import _native
from ._errors import Blocked, FailcoreError, OutsideSession, ReplayMiss

__all__ = [
    "Blocked",
    "FailcoreError",
    "OutsideSession",
    "ReplayMiss",
    "current_session",
    "llm_proxy",
    "mcp_proxy",
    "session",
    "tool",
]

__version__ = _native.version()

# The scope calls run in: a native session (inside `with failcore.session()`), or the scope of the tool
# body the call is made from (nested calls are matched within their parent call).
_scope = contextvars.ContextVar("failcore_scope", default=None)

_open_lock = threading.Lock()
_open = []  # the sessions entered and not yet exited, in this process


def _current_scope():
    scope = _scope.get()
    if scope is not None:
        return scope
    # A thread started inside `with failcore.session()` does not inherit the context (threading does not
    # copy context variables): when exactly one session is open, that is the one.
    with _open_lock:
        if len(_open) == 1:
            return _open[0]._native
        if len(_open) > 1:
            raise OutsideSession(
                "a tool was called outside any session while %d sessions are open: call it inside "
                "`with <session>:`, or run it with contextvars.copy_context().run(...) from where the "
                "session is current" % len(_open)
            )
    return None  # the process default session


# ---------------------------------------------------------------------------------------------------
# Values: what JSON gives back exactly.

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_MAX_DEPTH = 256


def _unfit(value, path, depth=0):
    """Why ``value`` would not come back from JSON as the same value of the same type, or None."""
    if depth > _MAX_DEPTH:
        return "%s is nested more than %d levels deep (or refers to itself)" % (path, _MAX_DEPTH)
    t = type(value)
    if value is None or t is bool:
        return None
    if t is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "%s is a str with a lone surrogate, which is not valid UTF-8" % path
        return None
    if t is int:
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return "%s is an int outside the 64-bit range JSON numbers are read back in" % path
    if t is float:
        if math.isfinite(value):
            return None
        return "%s is %r, which JSON has no number for" % (path, value)
    if t is list:
        for i, item in enumerate(value):
            why = _unfit(item, "%s[%d]" % (path, i), depth + 1)
            if why:
                return why
        return None
    if t is dict:
        for key, item in value.items():
            if type(key) is not str:
                return "%s has a key of type %s (%r): JSON object keys are strings" % (
                    path,
                    type(key).__name__,
                    key,
                )
            why = _unfit(item, "%s[%r]" % (path, key), depth + 1)
            if why:
                return why
        return None
    name = t.__qualname__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__qualname__)
    if _model_class(t) is not None:
        return (
            "%s is a %s, a pydantic model: it is recorded as its fields only where the parameter's (or "
            "the return) annotation is exactly its class, so that it can be rebuilt" % (path, name)
        )
    return (
        "%s is a %s, which JSON would not give back as it is (only dict with str keys, list, str, "
        "int, float, bool and None are recorded: convert it, e.g. a tuple to a list)" % (path, name)
    )


def _dumps(value):
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class _Meta:
    __slots__ = ("name", "fn", "signature", "skip", "paths", "models", "returns", "native")


_PATH_TYPES = (pathlib.PurePath, os.PathLike, "Path", "PurePath", "PathLike", "pathlib.Path", "os.PathLike")


def _is_path_annotation(annotation):
    if isinstance(annotation, str):  # `from __future__ import annotations`
        return annotation in _PATH_TYPES
    return isinstance(annotation, type) and issubclass(annotation, (pathlib.PurePath, os.PathLike))


def _arguments(meta, args, kwargs):
    """The call's arguments by name, as JSON text, without the skipped ones."""
    bound = meta.signature.bind(*args, **kwargs)
    bound.apply_defaults()
    out = {}
    for name, value in bound.arguments.items():
        if name in meta.skip:
            continue
        if meta.signature.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL:
            value = list(value)  # the binding's own tuple, not a value of the caller's
        elif name in meta.paths and isinstance(value, os.PathLike):
            value = os.fspath(value)  # a path argument is its text, for the fingerprint and the policy
            if type(value) is not str:
                raise TypeError("%s: argument `%s` is a bytes path: pass a str path" % (meta.name, name))
        model = meta.models.get(name)
        if model is not None and type(value) is model:
            value = value.model_dump()  # the annotation says the class: its fields are the value
        why = _unfit(value, name)
        if why:
            raise TypeError(
                "%s: argument `%s` cannot be recorded: %s; pass a JSON value, or leave the argument "
                "out of the fingerprint with skip=[%r]" % (meta.name, name, why, name)
            )
        out[name] = value
    return _dumps(out)


def _model_class(annotation):
    """The pydantic model class an annotation names, or None (pydantic is not imported for this)."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None or not isinstance(annotation, type) or annotation is pydantic.BaseModel:
        return None
    return annotation if issubclass(annotation, pydantic.BaseModel) else None


def _output(meta, value):
    if meta.returns is not None and value is not None:
        if type(value) is not meta.returns:
            raise TypeError(
                "%s: the output cannot be recorded: it is a %s, and the return annotation says %s (the "
                "class a recorded output is rebuilt as): return a %s or None"
                % (meta.name, type(value).__qualname__, meta.returns.__qualname__, meta.returns.__qualname__)
            )
        # Recorded as its fields, given back as the annotated class rebuilt from them: only when that
        # gives back an equal model.
        fields = value.model_dump()
        why = _unfit(fields, "the output's fields")
        if why:
            raise TypeError("%s: the output cannot be recorded: %s" % (meta.name, why))
        text = _dumps(fields)
        if meta.returns.model_validate(json.loads(text)) != value:
            raise TypeError(
                "%s: the output cannot be recorded: a %s rebuilt from its fields (model_dump, then "
                "model_validate) is not equal to it" % (meta.name, meta.returns.__qualname__)
            )
        return text
    why = _unfit(value, "the output")
    if why:
        raise TypeError("%s: the output cannot be recorded: %s" % (meta.name, why))
    return _dumps(value)


def _load(meta, text):
    """The call's result from its recorded output: JSON, or the annotated pydantic model rebuilt from it."""
    value = json.loads(text)
    if meta.returns is not None and type(value) is dict:
        return meta.returns.model_validate(value)
    return value


# ---------------------------------------------------------------------------------------------------
# Tools.

_EFFECTS = ("pure", "read", "write", "network", "exec")


def _default_name(fn):
    # `Repo.fetch` for a method, `fetch` for a function (also one defined inside another function).
    return fn.__qualname__.rsplit("<locals>.", 1)[-1]


def tool(
    fn=None,
    *,
    policy=None,
    effect=None,
    name=None,
    version="",
    skip=(),
    redact=(),
    replay="auto",
    description=None,
    paths=(),
):
    """Makes a function (plain or ``async def``, free or a method) a FailCore tool.

    - ``policy``: a policy by name: a preset (``"fs_safe"``, ``"fs_read_only"``, ...) or one defined in
      the session's policy file (``failcore.toml``). Checked before the body runs; a denied call raises
      :class:`Blocked` and is recorded as blocked.
    - ``effect``: ``"pure"``, ``"read"``, ``"write"``, ``"network"`` or ``"exec"``.
    - ``name``: the tool's name in traces (default: the function's, ``Class.method`` for a method).
    - ``version``: the tool's contract version, part of the fingerprint: bump it to stop replaying old
      outputs.
    - ``skip``: parameters left out of the fingerprint and the trace (clients, handles). ``self`` and
      ``cls`` are always left out.
    - ``redact``: parameters (or JSON pointers into the arguments, ``"/config/password"``) fingerprinted
      but stored in the trace only as a keyed hash.
    - ``replay``: ``"auto"``, or ``"never"`` to always execute live, even when resuming.
    - ``paths``: parameters that are file paths, for ``fs`` policies (``fs_safe``, ...), besides those
      annotated ``pathlib.Path`` or ``os.PathLike``; a path argument may be a ``str`` or a path object.

    Arguments are bound by name and must be JSON values that come back exactly (dict with str keys,
    list, str, int, float, bool, None); anything else raises ``TypeError`` naming the parameter, before
    the body runs. So must the return value, which is given back from the trace when the call is
    replayed; one that is not is recorded as a failure and raises ``TypeError``. A pydantic model is
    recorded as its fields (``model_dump()``, themselves JSON values) where the parameter's or the
    return annotation is exactly its class; a returned one is given back rebuilt with
    ``model_validate``, and refused when that would not give back an equal model.
    """
    if isinstance(skip, str):
        skip = (skip,)
    if isinstance(redact, str):
        redact = (redact,)
    if isinstance(paths, str):
        paths = (paths,)
    if policy is not None and not isinstance(policy, str):
        raise TypeError("policy must be a policy's name (a preset or one in the policy file)")
    if effect is not None and effect not in _EFFECTS:
        raise ValueError("effect %r: expected one of %s" % (effect, ", ".join(_EFFECTS)))
    if replay not in ("auto", "never"):
        raise ValueError('replay %r: expected "auto" or "never"' % (replay,))

    def decorate(fn):
        if not callable(fn):
            raise TypeError("@failcore.tool decorates a function, not %r" % (fn,))
        signature = inspect.signature(fn)
        params = list(signature.parameters)
        skipped = set(skip)
        unknown = skipped.difference(params)
        if unknown:
            raise ValueError("%s: skip names no parameter %s" % (fn.__qualname__, sorted(unknown)))
        if params and params[0] in ("self", "cls"):
            skipped.add(params[0])
        path_args = [p for p, param in signature.parameters.items() if _is_path_annotation(param.annotation)]
        for p in paths:
            if p not in params:
                raise ValueError("%s: paths names no parameter (%r)" % (fn.__qualname__, p))
            if p not in path_args:
                path_args.append(p)
        pointers = []
        for r in redact:
            pointer = r if r.startswith("/") else "/" + r.replace("~", "~0").replace("/", "~1")
            head = pointer[1:].split("/", 1)[0].replace("~1", "/").replace("~0", "~")
            if head not in params or head in skipped:
                raise ValueError("%s: redact names no recorded parameter (%r)" % (fn.__qualname__, r))
            pointers.append(pointer)
        meta = _Meta()
        meta.name = name or _default_name(fn)
        meta.fn = fn
        meta.signature = signature
        meta.skip = frozenset(skipped)
        meta.paths = frozenset(path_args)
        annotations = _resolved_annotations(fn)
        meta.models = {}
        for p in params:
            model = _model_class(annotations.get(p))
            if model is not None:
                meta.models[p] = model
        meta.returns = _model_class(annotations.get("return"))
        meta.native = _native.Tool(
            meta.name,
            effect=effect,
            version=version,
            policy=policy,
            description=description if description is not None else inspect.getdoc(fn) or "",
            redact=pointers,
            never_replay=replay == "never",
            paths=[p for p in path_args if p not in skipped],
        )
        if inspect.iscoroutinefunction(fn):
            wrapper = _async_tool(meta)
        else:
            wrapper = _sync_tool(meta)
        wrapper.__annotations__ = annotations
        wrapper.failcore_tool = meta.native
        return wrapper

    if fn is not None:
        return decorate(fn)
    return decorate


def _resolved_annotations(fn):
    """The function's annotations with names resolved in its own module: frameworks read the wrapper's
    (CrewAI, LangChain, AutoGen, the OpenAI Agents SDK, Pydantic AI build the model's JSON schema from
    them), and some resolve string annotations (``from __future__ import annotations``) in the globals of
    the function they are given, which for the wrapper would be this module's."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # a name not defined yet (or not at module level): left as written
        return fn.__annotations__
    return {name: hints.get(name, annotation) for name, annotation in fn.__annotations__.items()}


def _sync_tool(meta):
    fn = meta.fn

    @functools.wraps(fn)
    def call(*args, **kwargs):
        arguments = _arguments(meta, args, kwargs)
        scope = _current_scope()

        # Runs on this thread, inside the lifecycle, when the call is not served from the trace.
        def body(inner):
            token = _scope.set(inner) if inner is not None else None
            try:
                return _output(meta, fn(*args, **kwargs))
            finally:
                if token is not None:
                    _scope.reset(token)

        return _load(meta, meta.native.call_sync(scope, arguments, body))

    return call


async def _run_body(meta, args, kwargs):
    return _output(meta, await meta.fn(*args, **kwargs))


def _settle(meta, future, output, error):
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        try:
            future.set_result(_load(meta, output))
        except Exception as e:  # a recorded output the annotated model no longer accepts
            future.set_exception(e)


def _async_tool(meta):
    fn = meta.fn

    @functools.wraps(fn)
    async def call(*args, **kwargs):
        arguments = _arguments(meta, args, kwargs)
        scope = _current_scope()
        loop = asyncio.get_running_loop()
        result = loop.create_future()
        context = contextvars.copy_context()
        tasks = []

        # Called from the runtime's thread when the lifecycle reaches the body: the coroutine runs as a
        # task of this loop, in the caller's context, with the body's scope current for nested calls.
        def start(inner, done):
            def begin():
                if inner is not None:
                    context.run(_scope.set, inner)
                task = context.run(loop.create_task, _run_body(meta, args, kwargs))
                tasks.append(task)
                task.add_done_callback(done)

            loop.call_soon_threadsafe(begin)

        def settle(output, error):
            loop.call_soon_threadsafe(_settle, meta, result, output, error)

        handle = meta.native.call_async(scope, arguments, start, settle)
        try:
            return await result
        except asyncio.CancelledError:
            handle.cancel()
            for task in tasks:
                task.cancel()
            raise

    return call


# ---------------------------------------------------------------------------------------------------
# Sessions.


def _run_spec(value):
    return "last" if value is True else value or None


class session:
    """One run. ``with failcore.session(...) as s:`` (or ``async with``) records the calls made inside
    it in a run of its own and finishes the run (writes its ``run_end``) on exit.

    - ``resume``: ``"last"`` or a run id: calls that succeeded there are served from its trace.
    - ``offline``: ``"last"`` or a run id: replay with nothing executed; a call with no recorded
      success raises :class:`ReplayMiss`.
    - ``policy``: a policy file (``failcore.toml``); ``store``: a store spec (``jsonl:<dir>``, ...);
      ``dir``: the trace directory (default ``.failcore``); ``run_key``: a run key (see the Rust
      ``SessionBuilder::run_key``); ``sandbox``: the root of the ``fs_safe`` policy; ``models``: a model
      configuration (TOML, as ``failcore llm-proxy --models``) whose allow-list and budgets guard the
      run's model calls, for :meth:`llm_proxy`.

    What is not given comes from the environment as the Rust side reads it (``FAILCORE_DIR``,
    ``FAILCORE_STORE``, ``FAILCORE_RESUME``, ``FAILCORE_OFFLINE``, ``FAILCORE_POLICY``,
    ``FAILCORE_SANDBOX``, ``FAILCORE_DURABILITY``, ...).
    """

    def __init__(
        self,
        resume=None,
        *,
        offline=None,
        policy=None,
        store=None,
        dir=None,
        run_key=None,
        sandbox=None,
        models=None,
    ):
        self._options = dict(
            resume=_run_spec(resume),
            offline=_run_spec(offline),
            policy=None if policy is None else str(policy),
            store=store,
            dir=None if dir is None else str(dir),
            run_key=run_key,
            sandbox=None if sandbox is None else str(sandbox),
            models=None if models is None else str(models),
        )
        self._native = None
        self._tokens = []
        self.summary = None

    def open(self):
        """Opens the run (done by ``with``)."""
        if self._native is None:
            self._native = _native.Session(**self._options)
        return self

    @property
    def run_id(self):
        return self.open()._native.run_id

    @property
    def resumed_from(self):
        """The run this one resumes or replays, or None."""
        return self.open()._native.resumed_from

    def llm_proxy(self, upstream=None):
        """Serves the LLM proxy in this process for this run and returns its base URL
        (``http://127.0.0.1:PORT/v1``), for the agent's OpenAI or Anthropic client (``base_url=``): its
        model calls are steps of this run, served on resume and offline like its tools. ``upstream`` is
        the API's base URL (``https://api.openai.com/v1``, ``https://api.anthropic.com/v1``); an offline
        session needs none (every call is served from the trace). Called again, returns the same URL.
        The proxy stops when the session finishes."""
        return self.open()._native.llm_proxy(upstream)

    def mcp_proxy(self, command=None, url=None, *, headers=None, timeout=None):
        """Serves the MCP proxy in this process for this run and returns its URL
        (``http://127.0.0.1:PORT/mcp``), for the agent's MCP client (Streamable HTTP): its ``tools/call``
        requests are steps of this run, checked by its policy and served on resume and offline like its
        tools. ``command`` is the MCP server to start for each client session (``["npx", "-y",
        "@modelcontextprotocol/server-filesystem", "/data"]``); ``url`` a remote MCP server's, instead;
        ``headers`` (a dict) are sent to the remote server and never recorded; ``timeout`` is how long a
        request may wait for the server, in seconds (default 300). Offline, the server is not started
        when the run recorded its description (at its first MCP call): ``command`` or ``url`` still names
        it. Called again for the same server, returns the same URL. The proxy stops when the session
        finishes, before its end is written."""
        return self.open()._native.mcp_proxy(*_mcp_server(command, url, headers, timeout))

    def finish(self):
        """Writes the run's end and returns its summary (done by ``with`` on exit)."""
        if self.summary is None:
            self.summary = self.open()._native.finish()
        return self.summary

    def __enter__(self):
        self.open()
        self._tokens.append(_scope.set(self._native))
        with _open_lock:
            _open.append(self)
        return self

    def __exit__(self, *exc):
        _scope.reset(self._tokens.pop())
        with _open_lock:
            _open.remove(self)
        self.finish()
        return False

    async def __aenter__(self):
        if self._native is None:
            self._native = await asyncio.get_running_loop().run_in_executor(
                None, lambda: _native.Session(**self._options)
            )
        return self.__enter__()

    async def __aexit__(self, *exc):
        _scope.reset(self._tokens.pop())
        with _open_lock:
            _open.remove(self)
        if self.summary is None:
            self.summary = await asyncio.get_running_loop().run_in_executor(None, self._native.finish)
        return False

    def __repr__(self):
        run = self._native.run_id if self._native is not None else "not opened"
        return "<failcore.session %s>" % run


def current_session():
    """The run id calls made here would be recorded in, or None for the default session not yet opened."""
    scope = _current_scope()
    return scope.run_id if scope is not None else None


def llm_proxy(upstream=None):
    """:meth:`session.llm_proxy` of the current session: the one of the enclosing ``with
    failcore.session()``, else the process default session (stopped when the interpreter exits)."""
    return _proxy_session("llm_proxy").llm_proxy(upstream)


def _proxy_session(what):
    """The native session a proxy started here serves: the current one, else the default one."""
    scope = _current_scope()
    if scope is None:
        scope = _native.Session.default()
    if not isinstance(scope, _native.Session):
        raise OutsideSession(
            "failcore.%s() is called from a session, not from inside a tool's body: start the "
            "proxy before the agent runs" % what
        )
    return scope


def mcp_proxy(command=None, url=None, *, headers=None, timeout=None):
    """:meth:`session.mcp_proxy` of the current session: the one of the enclosing ``with
    failcore.session()``, else the process default session (stopped when the interpreter exits)."""
    return _proxy_session("mcp_proxy").mcp_proxy(*_mcp_server(command, url, headers, timeout))


def _mcp_server(command, url, headers, timeout):
    """The arguments of ``mcp_proxy``, as the native side takes them."""
    if isinstance(command, (str, bytes)):
        raise TypeError("mcp_proxy: command is a list (the program and its arguments), not a string")
    return (
        None if command is None else [str(c) for c in command],
        url,
        None if headers is None else [(str(k), str(v)) for k, v in dict(headers).items()],
        None if timeout is None else float(timeout),
    )


@atexit.register
def _finish_default():
    try:
        _native.finish_default()
    except FailcoreError:
        pass
