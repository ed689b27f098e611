"""The headless command line: the same services as the GUI, one command each.

Each ``cmd_*`` module registers its subcommands with ``register(subparsers)``
and sets ``handler(ctx, args) -> int`` on them. Errors meant for the operator
(``ConsoleError``) become one sentence on stderr and their exit code.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from ..bootstrap import Workspace
from ..errors import EXIT_FAILED, EXIT_USAGE, ConsoleError, UsageError
from . import cmd_actions, cmd_db, cmd_read, cmd_simulate, cmd_stats, cmd_status

# Each registers its subcommands, in this order in --help.
COMMAND_MODULES = (cmd_status, cmd_db, cmd_read, cmd_stats, cmd_actions, cmd_simulate)
GUI_PAGES = ("overview", "notifications", "duplicates", "failed", "charts", "audit")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one sentence and exit code 2."""

    def error(self, message):  # noqa: D401 - argparse API
        raise UsageError(f"{self.prog}: {message} (see --help).")


@dataclass
class CliContext:
    args: argparse.Namespace
    out: TextIO = field(default_factory=lambda: sys.stdout)
    _workspace: Workspace | None = None

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def workspace(self):
        if self._workspace is None:
            self._workspace = open_workspace(self.args)
        return self._workspace

    def emit(self, payload, text: str | None = None) -> None:
        """Print ``payload`` as JSON with --json, else ``text`` (or the JSON)."""
        if self.json or text is None:
            from ..jsontext import json_default
            print(json.dumps(payload, default=json_default, indent=2), file=self.out)
        else:
            print(text, file=self.out)


def open_workspace(args):
    from ..bootstrap import bootstrap
    from ..config import load_config
    if getattr(args, "demo", False):
        from ..demo import ensure_demo_workspace
        config = ensure_demo_workspace(reset=getattr(args, "reset", False))
    else:
        config = load_config(getattr(args, "config", None))
    return bootstrap(config)


def build_parser() -> Parser:
    parser = Parser(prog="main.py", description="Notification Console: keep notification delivery honest.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    where.add_argument("--demo", action="store_true", help="use the embedded demo workspace")
    parser.add_argument("--reset", action="store_true", help="with --demo: recreate the demo workspace")
    parser.add_argument("--screenshot", metavar="FILE.png", help="render the window offscreen to a PNG and exit")
    parser.add_argument("--simulate", nargs="?", const="guarded", choices=("guarded", "naive"), metavar="MODE",
                        help="open the console with the traffic simulator running (guarded, the default, or naive)")
    parser.add_argument("--page", choices=GUI_PAGES, default="overview", help="page to show (with --screenshot)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def run(argv: list[str] | None = None) -> int:
    """Parse and run one CLI command; return its exit code (GUI: None handled by main)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.reset and not args.demo:
            raise UsageError("--reset only goes with --demo.")
        if args.simulate and args.command is not None:
            raise UsageError("--simulate opens the console with traffic running; for a counted run use "
                             "the simulate command.")
        if args.command is None:
            return -1  # no command: the caller opens the GUI
        ctx = CliContext(args=args)
        try:
            return int(args.handler(ctx, args) or 0)
        finally:
            if ctx._workspace is not None:
                ctx._workspace.close()
    except ConsoleError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return EXIT_FAILED
    except SQLAlchemyError as exc:  # a database error no service turned into a sentence
        from ..sources import describe_db_error
        print(f"error: {describe_db_error('configured', exc)}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (``stats | head``): what it wanted it has; the rest goes nowhere,
        # and Python's own flush at exit must not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # last resort: one sentence, never a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: unexpected {type(exc).__name__}{': ' + first if first else ''} "
              "(run with NC_DEBUG=1 for details).", file=sys.stderr)
        if os.environ.get("NC_DEBUG"):
            raise
        return EXIT_FAILED
    except SystemExit as exc:  # argparse --help
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
