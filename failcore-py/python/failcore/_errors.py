"""The exceptions FailCore raises. Each has ``kind``, the Rust error's short name."""


class FailcoreError(Exception):
    """A FailCore error: a store, a policy file or a session that could not be opened, ..."""

    kind = "failcore"


class Blocked(FailcoreError):
    """The policy refused the call; the tool body did not run. ``tool``, ``policy``, ``rule``, ``reason``."""

    kind = "blocked"
    tool = policy = rule = reason = ""


class ReplayMiss(FailcoreError):
    """Offline: the run being replayed has no recorded success for this call, so nothing ran.
    ``tool``, ``run``, ``fingerprint``."""

    kind = "replay_miss"
    tool = run = fingerprint = ""


class OutsideSession(FailcoreError):
    """A tool was called where the session cannot be known (several sessions are open and this thread or
    task is in none of them)."""

    kind = "outside_scope"
