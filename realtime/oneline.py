"""How sidl's commands end on a user's mistake: one line on stderr and exit code 2, never a traceback.

``sidl`` and ``sidl-live`` both run their typer apps through ``run_app``; each says which exception
types are a user's mistake (a missing preset, a bad option, a port that is not there).
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn

import typer

# click's UsageError, from the click that typer uses (recent typer vendors its own copy).
CLICK_USAGE_ERROR = typer.BadParameter.__mro__[1]


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def run_app(call: Callable[[], object], prog: str, user_errors: tuple) -> NoReturn:
    """Run ``call`` (a typer app called with ``standalone_mode=False``) and exit with its code."""
    try:
        code = call()
    except CLICK_USAGE_ERROR as e:
        if type(e).__name__ == "NoArgsIsHelpError":     # the bare command: its help, not an error
            print(e.format_message())
            sys.exit(0)
        fail(prog, e.format_message())
    except user_errors as e:
        fail(prog, str(e))
    except typer.Abort as e:
        if isinstance(e.__context__, EOFError):       # click turns an EOFError into Abort: a truncated file
            fail(prog, "a file ended early (empty or truncated?)")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
