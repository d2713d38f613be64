"""The ``mosaic`` command. Each area registers its own sub-commands.

Registration modules import nothing heavy at top level, so ``mosaic --help`` stays fast
and nothing connects at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from mosaic.errors import MosaicError
from mosaic.ops.logs import configure_from_settings

# Each module exposes ``register(subparsers) -> None``; a sub-command sets
# ``func(args) -> int`` as its parser default.
COMMAND_MODULES: tuple[str, ...] = (
    "mosaic.db_commands",
    "stack.commands",
    "streams.commands",
    "matcher.commands",
    "matcher.service_commands",
    "producers.commands",
    "consumers.commands",
    "consumers.postmatch.commands",
    "profiles.commands",
    "app.demo",
    "app.web",
    "app.ops.commands",
    "app.ops.report",
    "app.ops.inspect_commands",  # after the deadletters and topics commands it extends
    "app.ops.config_docs",
    "app.ops.asyncapi",
    "app.ops.erase",
)

Handler = Callable[[argparse.Namespace], int]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every command's help shows each argument's default, unless the help text already
    says it or there is none to show (``None``, a plain ``store_true`` flag)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text.lower() or action.default in (None, False, argparse.SUPPRESS)
                or action.default == []):
            return text
        return super()._get_help_string(action)


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every sub-command parser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += all_parsers(sub)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mosaic", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    for each in all_parsers(parser):  # one help style for every command
        if each.formatter_class in (argparse.HelpFormatter,
                                    argparse.ArgumentDefaultsHelpFormatter):
            each.formatter_class = HelpFormatter
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mosaic-match")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # MOSAIC_LOG_LEVEL, MOSAIC_LOG_FORMAT=json, secrets masked, third-party noise at DEBUG
    # only (httpx never below WARNING: Nakama server calls carry the http_key in URLs).
    configure_from_settings(verbose=args.verbose)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except MosaicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
