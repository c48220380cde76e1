"""Command line: parse arguments, build configurations, call the library. Nothing else.

Each command lives in its own module with ``add_parsers(subparsers)``; handlers return an
exit code. User errors (``ValueError``) and file-system errors (``OSError``: a path that cannot be
written, a full disk) print one line and exit with code 2. Ctrl-C or SIGTERM exits with 130 and one line
saying what is kept: `run` and `search` store finished work and resume it; `bench` and `prior`
keep less and catch the interrupt themselves to say so.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
from collections.abc import Iterator
from importlib.metadata import version
from typing import NoReturn

import matplotlib

from benchmark.checks import did_you_mean
from benchmark.cli import bench, prior, report, run, search
from benchmark.processes import terminate_as_interrupt
from benchmark.progress import chosen_progress


# What Ctrl-C leaves, for commands that do not say so themselves (run says it once it has started).
INTERRUPTED = {"run": run.INTERRUPTED,
               "report": "interrupted: the report being written was dropped (an earlier one stays as it was); "
                          "run the same command again to write it"}


# File-system errors that are the user's to fix whether or not they name a path (torchvision's
# dataset loaders raise some with a message alone).
PATH_ERRORS = (FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like the commands' own (no usage block above them),
    and options spelled out: ``--epoch`` is not taken for ``--epochs``, so an option added later
    cannot change what a script's abbreviation meant (subcommands' parsers are of this class too)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._given: list[str] = []
        self._unknown: list[str] = []

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._given = list(sys.argv[1:] if args is None else args)  # a subcommand's parser gets its own part
        namespace, self._unknown = super().parse_known_args(args, namespace)
        self._refuse_repeated()
        return namespace, self._unknown

    def _refuse_repeated(self) -> None:
        """Refuse a list option given again with another list (``--params-from a --params-from b``), and a
        command's one ``--suite`` given again with another (``report`` takes several): argparse keeps the last
        alone, silently, where both were meant. Another option given again overrides, as is usual."""
        given = self._given[:self._given.index("--")] if "--" in self._given else self._given
        for action in self._actions:
            if type(action) is not argparse._StoreAction or (action.nargs != "+" and action.dest != "suite"):
                continue
            values = [value for i, arg in enumerate(given) if (value := self._value_at(action, given, i)) is not None]
            if len(set(values)) < 2:
                continue
            option = action.option_strings[-1]
            times = "twice" if len(values) == 2 else f"{len(values)} times"
            if action.nargs == "+":
                listed = " ".join(dict.fromkeys(item for value in values for item in value))
                self.error(f"{option} given {times}: list its values after one, `{option} {listed}`")
            self.error(f"{option} given {times} ({', '.join(v[0] for v in values)}): {run.one_suite(self.prog)}")

    @staticmethod
    def _value_at(action: argparse.Action, given: list[str], i: int) -> tuple[str, ...] | None:
        """The value ``action``'s option takes at ``given[i]``, as a tuple; None where it is not there."""
        option, equals, value = given[i].partition("=")
        if option not in action.option_strings:
            return None
        if equals:
            return (value,)
        if action.nargs != "+":
            return tuple(given[i + 1:i + 2])
        rest = given[i + 1:]
        return tuple(rest[:next((j for j, arg in enumerate(rest) if arg.startswith("-")), len(rest))])

    def error(self, message: str) -> NoReturn:
        # A mistyped option (--siute) is the cause of the required one's absence: name it instead.
        mistyped = [arg.split("=")[0] for arg in self._given
                    if arg.startswith("--") and arg.split("=")[0] not in self._option_string_actions]
        if mistyped and message.startswith("the following arguments are required"):
            message = f"unrecognized arguments: {' '.join(mistyped)}"
        elif message == "the following arguments are required: --suite" and self._given \
                and not self._given[0].startswith("-"):  # `run smoke`
            message += self._placement(self._given[:1])
        if message.startswith("unrecognized arguments"):
            strays = self._unknown or mistyped  # none known where argparse stopped first (a required one missing)
            message += ((did_you_mean(mistyped[0], self._option_string_actions) if mistyped else "")
                        or (self._placement(strays) if strays else ""))
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")

    def _placement(self, strays: list[str]) -> str:
        """Where the arguments this command did not take belong: ``report smoke`` means ``--suite smoke``,
        ``suites --suite smoke`` the suite alone."""
        if not strays[0].startswith("-"):
            suite = self._option_string_actions.get("--suite")
            repeats = isinstance(suite, argparse._AppendAction)  # report's
            if suite is None or (not repeats and any(arg.split("=")[0] == "--suite" for arg in self._given)):
                return ""
            names = [stray for stray in strays if not stray.startswith("-")][:None if repeats else 1]
            return f" (did you mean `{' '.join(f'--suite {shlex.quote(name)}' for name in names)}`?)"
        option = strays[0].split("=")[0]
        study = option == "--suite" and any(a.dest == "name" and not a.option_strings for a in self._actions)
        if not study and not any(not a.option_strings and (a.metavar or a.dest).lower() == option[2:]
                                 for a in self._actions):
            return ""
        # The command as given, each `--suite X` made the positional X (`studies show --suite mine`: suite-mine);
        # the other options and their values kept
        args, given = [], iter(self._given)
        for arg in given:
            name, equals, value = arg.partition("=")
            if name != option:
                args.append(arg)
                continue
            value = value if equals else next(given, option[2:].upper())
            args.append(f"suite-{value}" if study else value)
        if study:
            return f" (a run's study is named after its suite: `{self.prog} {shlex.join(args)}`)"
        return f" (it takes the {option[2:]} alone: `{self.prog} {shlex.join(args)}`)"


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every (sub)command parser under ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                yield command
                yield from _commands(command)


def _before_its_command(parser: argparse.ArgumentParser, given: list[str]) -> str:
    """For a command's option given before the command (``--quiet run``): where it goes."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    command = next((arg for arg in given[1:] if arg in commands), None)
    if command is None or given[0].split("=")[0] not in commands[command]._option_string_actions:
        return ""
    return f" (an option of {command}: give it after the command, `{parser.prog} {command} {given[0]} ...`)"


def build_parser(prog: str = "python -m benchmark") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Cross-validation benchmark suite for multitask VAEs.")
    parser.add_argument("--version", action="version", version=f"mtvae-bench {version('mtvae-bench')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, report, search, bench, prior):
        module.add_parsers(sub)
    for command in _commands(parser):  # the innermost command's default wins: its errors point to its help
        command.set_defaults(parser=command)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m benchmark") -> int:
    parser = build_parser(prog)
    given = list(sys.argv[1:] if argv is None else argv)
    if given and given[0].startswith("-") and given[0] not in parser._option_string_actions:
        # not "COMMAND is required", for a mistyped --help
        parser.error(f"unrecognized arguments: {given[0]}" + (_before_its_command(parser, given)
                                                              or did_you_mean(given[0], parser._option_string_actions)))
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would name the top-level help; the command's own help lists its options
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = given  # `run` records the command that started it
    matplotlib.use("Agg")  # figures go to files, never to a window (Optuna's plots draw through pyplot)
    try:
        chosen_progress()  # a mistyped value stops the command before it starts, not once its bar is made
        with terminate_as_interrupt():  # SIGTERM (timeout, Slurm, systemd) stops a command as Ctrl-C does, at any point
            code = args.handler(args)
        sys.stdout.flush()  # output piped to a reader that stopped fails here, not at exit with a traceback
        return code
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the output's reader stopped (`... | head`): end quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # or the flush at exit fails again
        return 141
    except OSError as err:
        # A folder option naming a file, a place that cannot be made or written, a full disk: the path
        # says which. What a run or search finished is in its study, which the next run resumes.
        # Others (a timeout, too many open files) are not the user's to fix: their traceback stays.
        if not (isinstance(err, PATH_ERRORS) or err.filename or err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)):
            raise
        print(f"error: {err.strerror}: {err.filename}" if err.strerror and err.filename else
              f"error: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # one with a message knows better what it left
        print(str(interrupt) or INTERRUPTED.get(args.command, "interrupted"), file=sys.stderr)
        return 130
