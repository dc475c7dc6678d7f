"""The ``failcore`` command: the same command as the Rust binary, run in this process."""

import signal
import sys

from . import _native


def main(argv=None):
    """Runs ``failcore`` with ``argv`` (default ``sys.argv``) and exits with its status."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = "failcore"
    # As a native program: Ctrl-C ends it, and a closed pipe ends it quietly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    # The sample starts this program again for its run 1; the executable is the interpreter.
    code = _native.cli_main(argv, [sys.executable, "-m", "failcore"])
    sys.exit(code)
