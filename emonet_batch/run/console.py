"""The console script's stderr (our lines on the terminal, native libraries' own writes to a log file) and its exit.

Ray's C++ core inside the driver writes its error lines straight to file descriptor 2, outside Python's logging
and out of reach of every Ray setting except one that would also silence Ray's own log files (e.g. the
"constructor arguments in the object store" line each Ray Data actor pool prints, ray-project/ray#57733). So a quiet
run points descriptor 2 at a log file and gives Python's sys.stderr a duplicate of the terminal: our lines,
the live display and any traceback still show; what native code writes is kept in the file, named on a failed
run and removed after a successful or interrupted one. `--verbose` leaves stderr alone.
"""

from __future__ import annotations

import atexit
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

STDERR_FD = 2
#: The exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


@contextmanager
def native_stderr_to_file(enabled: bool) -> Iterator[list[int]]:
    """Inside, descriptor 2 is a log file and sys.stderr the terminal; the caller puts the exit code into the
    yielded list: zero removes the file, anything else (or none, when an exception escaped) keeps it and says
    where."""
    exit_code: list[int] = []
    if not enabled or not _stderr_is_descriptor_2():
        yield exit_code
        return
    sys.stderr.flush()
    terminal = os.dup(STDERR_FD)
    handle, path = tempfile.mkstemp(prefix="emonet-batch-", suffix=".native.log")
    os.dup2(handle, STDERR_FD)
    os.close(handle)
    original, sys.stderr = sys.stderr, _text_stream(terminal, sys.stderr)
    try:
        yield exit_code
    finally:
        sys.stderr.flush()
        os.dup2(terminal, STDERR_FD)
        sys.stderr = original
        os.close(terminal)
        # none recorded: an exception escaped; Ctrl-C is the operator's own stop, said in one line, nothing to look up
        _keep_or_remove(path, failed=not exit_code or exit_code[0] not in (0, EXIT_INTERRUPTED))


def _stderr_is_descriptor_2() -> bool:
    """False under test runners and anything else that replaced sys.stderr: only the real stream is moved."""
    try:
        return sys.stderr.fileno() == STDERR_FD
    except (AttributeError, OSError, ValueError):
        return False


def _text_stream(descriptor: int, like) -> io.TextIOWrapper:
    return io.TextIOWrapper(
        os.fdopen(descriptor, "wb", buffering=0, closefd=False),
        encoding=like.encoding,
        errors="backslashreplace",
        line_buffering=True,
    )


def _keep_or_remove(path: str, failed: bool) -> None:
    if failed and os.path.getsize(path):
        print(f"emonet-batch: native libraries' messages of this run are in {path}", file=sys.stderr)
    else:
        os.remove(path)


def exit_without_teardown(code: int) -> None:
    """Exit with `code` without the interpreter's teardown of the ~2,000 modules a run imports (Ray, Ray Data,
    pandas...), which would hold the prompt back after the summary. By now every file is written and closed and
    Ray is stopped; what the libraries registered to run at exit still runs (logging's flush, finalizers of
    temporary files, Ray's exit hook), then the standard streams are flushed. CPython names that step
    `atexit._run_exitfuncs`; elsewhere this is the interpreter's usual exit, only slower."""
    run_exit_hooks = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_hooks is None:
        sys.exit(code)
    run_exit_hooks()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream: nothing left to say there
            pass
    os._exit(code)
