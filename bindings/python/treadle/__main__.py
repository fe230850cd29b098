"""``python3 -m treadle``: a REPL with top-level ``await`` (as ``python3 -m
asyncio`` has) whose runtime keeps running between prompts.

Each line runs as a task of one multi_thread runtime, so ``await`` works at
the top level and ``treadle.spawn`` starts background tasks; the worker
threads go on running those tasks (printing, serving) while the prompt waits
for the next line. Ctrl-C at the prompt clears the line; Ctrl-C while a line
runs cancels that line's task and returns to the prompt (the tasks it
spawned go on); Ctrl-D shuts the runtime down and exits.
"""
from __future__ import annotations

import argparse
import ast
import code
import inspect
import signal
import sys
import traceback
import types
from typing import Any, Optional

import treadle


async def _run_line(func: types.FunctionType) -> Any:
    # A line compiled with top-level await is a coroutine function's body:
    # calling it returns a coroutine when the line awaits, else runs it.
    result = func()
    if inspect.iscoroutine(result):
        return await result
    return result


class Console(code.InteractiveConsole):
    """An InteractiveConsole that runs each line as a task of ``runtime``."""

    def __init__(self, runtime: treadle.Runtime, local_vars: dict) -> None:
        super().__init__(local_vars, filename="<console>")
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.runtime = runtime

    def runcode(self, code_obj: types.CodeType) -> None:
        func = types.FunctionType(code_obj, self.locals)
        try:
            self.runtime.block_on(_run_line(func))
        except SystemExit:
            raise
        except KeyboardInterrupt:
            self.write("\nKeyboardInterrupt\n")
        except BaseException as exc:
            self.show_line_error(exc)

    def show_line_error(self, exc: BaseException) -> None:
        """Prints exc's traceback from the first frame of the typed line
        on, leaving out the runtime's own frames."""
        sys.last_type, sys.last_value = type(exc), exc
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<console>":
            tb = tb.tb_next
        sys.last_traceback = tb
        self.write("".join(traceback.format_exception(type(exc), exc, tb)))


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m treadle",
        description="A Python REPL with top-level await on a treadle runtime.")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker threads (default: one per CPU)")
    args = parser.parse_args(argv)
    try:
        import readline  # noqa: F401  line editing and history for input()
    except ImportError:
        pass
    try:
        runtime = treadle.Runtime("multi_thread", workers=args.workers)
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2
    workers = runtime.metrics().workers
    # A console wants Ctrl-C even when started with SIGINT ignored (as
    # `cmd &` in a script starts it), which Python would leave alone.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    local_vars = {"__name__": "__main__", "__builtins__": __builtins__,
                  "treadle": treadle, "runtime": runtime}
    console = Console(runtime, local_vars)
    hook = getattr(sys, "__interactivehook__", None)
    if hook is not None:
        hook()  # tab completion and history, as the plain REPL has
    banner = (f"treadle REPL on Python {sys.version.split()[0]}: multi_thread, "
              f"{workers} worker{'s' if workers != 1 else ''}.\n"
              'Use "await" directly; tasks you spawn keep running between '
              "prompts.\nCtrl-C cancels the running line, Ctrl-D exits.")
    try:
        console.interact(banner=banner, exitmsg="")
    finally:
        runtime.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
