"""How `stockq` reports: human text or, with `--json`, exactly one JSON document on stdout, and an exit
code a script can branch on. Narration and progress go to stderr, never into a JSON document."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

OK, JOB_FAILED, BAD_USAGE, UNREACHABLE, AUTH_REFUSED = 0, 1, 2, 3, 4
INTERRUPTED = 130  # Ctrl-C while following: the shell's code for SIGINT

EXIT_CODES_HELP = """\b
Exit codes:
  0  success (`status`: the job succeeded or is still queued/running)
  1  the job failed, was cancelled or was lost
  2  bad usage: a wrong option, or the API refused the request
     (4xx: invalid input, unknown or ambiguous job id, unknown model)
  3  cannot reach the API: connection refused or timed out, 5xx/503,
     or rate limited (429: retry later)
  4  auth refused (401/403): check STOCKQ_API_KEY
  130  Ctrl-C while following: the job goes on

\b
With --json, stdout is exactly one JSON document, on failure too:
  {"error": {"code": ..., "message": ...}, "exit_code": N}"""


def exit_code_of(status: str) -> int:
    """A job's status as the exit code: a failed or cancelled job did not produce what was asked (1); a
    succeeded one did, and an unfinished one may still (0)."""
    return JOB_FAILED if status in ("failed", "cancelled") else OK


class CliError(click.ClickException):
    """A failure with its exit code and a machine-readable code; `extra` joins the JSON document."""

    def __init__(self, exit_code: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.code = code
        self.extra = extra

    def doc(self) -> dict[str, Any]:
        return {
            **self.extra,
            "error": {"code": self.code, "message": self.message},
            "exit_code": self.exit_code,
        }


class Output:
    """`out`: results (off under --json); `story`: the demo's narration (stderr under --json); `err`:
    progress and notes, always stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(quiet=as_json, soft_wrap=True)
        self.story = Console(stderr=as_json, soft_wrap=True)
        self.err = Console(stderr=True, soft_wrap=True)

    def emit(self, doc: Any) -> None:
        """The one JSON document of a --json run."""
        if self.as_json:
            click.echo(json.dumps(doc, default=str))


def scripted(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds `--json` and passes an `Output` as `out`; a CliError still prints its document under --json."""

    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout (for scripts).")
    @functools.wraps(command)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> Any:
        out = Output(as_json)
        try:
            return command(*args, out=out, **kwargs)
        except CliError as exc:
            out.emit(exc.doc())
            raise

    return wrapper


class StockqGroup(click.Group):
    """Click's usage errors (exit 2) answer a JSON document too when the command line asked for --json."""

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().main(args, *rest, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if "--json" in getattr(self, "_argv", []):
                Output(True).emit(CliError(BAD_USAGE, "bad_usage", exc.format_message()).doc())
            raise
