"""The ``holdfast`` command line: one noun per command group, each in its own module.

Groups are imported lazily, only when invoked, so ``holdfast --version`` stays fast and a broken
optional dependency in one group never breaks another.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from holdfast import __version__
from holdfast.display import escape_control
from holdfast.errors import HoldfastError, UserError

# command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, tuple[str, str]] = {
    "lm": ("holdfast.cli.lm:lm", "Call models and read the model call log."),
    "sandbox": ("holdfast.cli.sandbox:sandbox", "Run code in an isolated Python worker."),
    "rlm": ("holdfast.cli.rlm:rlm", "Recursive Language Model jobs: ask, trace, replay."),
    "memory": ("holdfast.cli.memory:memory", "Knowledge memory: add, search, forget, reindex."),
    "task": ("holdfast.cli.task:task", "Durable tasks: submit, list, show, steer."),
    "receipts": ("holdfast.cli.receipts:receipts", "Show and verify a task's receipt chain."),
    "worker": ("holdfast.cli.worker:worker", "Run a worker that leases and runs tasks."),
    "approve": ("holdfast.cli.approvals:approve", "Approve a step that waits for a person."),
    "deny": ("holdfast.cli.approvals:deny", "Deny a step that waits for a person."),
    "run": ("holdfast.cli.run:run", "Run a long task with the agent."),
    "demo": ("holdfast.cli.demo:demo", "Run the offline end-to-end demo."),
    "serve": ("holdfast.cli.serve:serve", "Serve the HTTP API, OpenAI endpoint and console."),
    "token": ("holdfast.cli.token:token", "Bearer tokens for the server: create, list, revoke."),
    "eval": ("holdfast.cli.eval:eval", "Evaluation suites: run, report, export."),
    "trace": ("holdfast.cli.trace:trace", "Export a trace as training data."),
    "mcp": ("holdfast.cli.mcp:mcp", "Memory, analyze and tasks for coding agents over MCP."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("holdfast"):
                return _unavailable(cmd_name, target[1], "not built yet in this version")
            return _unavailable(cmd_name, target[1], f"needs the package {exc.name!r}")
        command: click.Command = getattr(module, attr)
        return command


def _unavailable(name: str, help_text: str, why: str) -> click.Command:
    @click.command(name=name, help=f"{help_text} (unavailable: {why})")
    def _cmd() -> None:
        raise click.ClickException(f"'holdfast {name}' is unavailable: {why}")

    return _cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="holdfast")
def cli() -> None:
    """Holdfast: a runtime for long-horizon LLM agents."""


def main(argv: list[str] | None = None) -> Any:
    """Entry point: typed Holdfast errors become a clear message and a stable exit code."""
    try:
        return cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # one line: what was wrong and where help is (arguments are echoed, so escaped)
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(escape_control(f"error: {exc.format_message()}{hint}"), err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(escape_control(f"error: {exc.format_message()}"), err=True)
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(escape_control(f"error: {exc.message}"), err=True)
        sys.exit(2)
    except HoldfastError as exc:
        click.echo(escape_control(f"error [{exc.code}]: {exc.message}"), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    # click returns the exit code of a command's Exit when not standalone (as the script does)
    sys.exit(main())
