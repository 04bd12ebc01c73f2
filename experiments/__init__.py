"""The command lines (``python -m experiments.NAME``) and the course's labs.

A Ctrl-C can come while a command is still importing torch (a few seconds), before its own handling of Ctrl-C
is in place. When this package is imported to run one of its commands (``python -m``, where ``sys.argv[0]`` is
"-m" while the module is being found), an uncaught KeyboardInterrupt is reported in one line instead of a
traceback, with exit status 130 as every command's own Ctrl-C handling gives. Output piped into a reader that
stops early (``python -m experiments.labs list | head``) ends quietly, as a shell tool does on SIGPIPE.
"""

import os
import sys


def _one_line_ctrl_c(kind, value, traceback):
    if issubclass(kind, KeyboardInterrupt):
        print("\ninterrupted (Ctrl-C); nothing was written", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # the interpreter is already unwinding: exit with the status a Ctrl-C gets everywhere else
    if issubclass(kind, BrokenPipeError):  # the reader of our stdout has gone: nothing more to say to anyone
        os._exit(141)  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe; no flush to fail
    _previous_hook(kind, value, traceback)


_previous_hook = sys.excepthook
if sys.argv[:1] == ["-m"]:
    sys.excepthook = _one_line_ctrl_c
