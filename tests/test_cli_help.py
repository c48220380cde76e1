"""`--help` on every command (SPEC, "Commands"): exit 0, usage on stdout, nothing on stderr."""

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, one_line_error

from benchmark.__main__ import script
from benchmark.cli import build_parser

# Every command and subcommand of `python -m benchmark`, the top level ("") first.
COMMANDS = ["", "run", "suites", "report", "search", "studies", "studies list", "studies show", "studies plot",
            "bench", "prior"]


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """The names of ``parser``'s (sub)commands, nested ones as ``studies list``."""
    names = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                names += [f"{prefix}{name}", *subcommands(command, f"{prefix}{name} ")]
    return names


def test_the_list_here_is_every_command_the_parser_has():
    assert sorted(subcommands(build_parser())) == sorted(COMMANDS[1:])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.replace(" ", "-") or "top-level")
def test_help_prints_usage_on_stdout_and_exits_0(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        cli(tmp_path, *command.split(), "--help")
    captured = capsys.readouterr()
    assert exit_.value.code == 0
    assert captured.out.startswith(f"usage: python -m benchmark {command}".rstrip())
    assert "options:" in captured.out and captured.err == ""
    assert not list(tmp_path.iterdir())  # help writes nothing


def test_help_of_the_real_entry_point_exits_0_with_nothing_on_stderr(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmark", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("usage: python -m benchmark")
    listed = re.findall(r"^    (\w+) ", done.stdout, re.MULTILINE)  # each command starts a line of the list
    assert listed == [name for name in COMMANDS[1:] if " " not in name]


def _catches(pid: int, sent: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler of its own for ``sent`` (Linux's /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE).group(1), 16)
    return bool(caught >> (sent - 1) & 1)


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_while_the_commands_import_is_one_line(tmp_path, sent):
    # Importing torch takes seconds; a Ctrl-C then printed the import's traceback, and SIGTERM killed it unsaid.
    process = subprocess.Popen([sys.executable, "-m", "benchmark", "--help"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    # Once it catches SIGTERM it is in the import (which takes seconds), where both are handled: a fixed wait
    # came too early on a busy machine.
    deadline = time.monotonic() + 60
    while not _catches(process.pid, signal.SIGTERM) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, sent)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (130, "", "interrupted before the command started\n")


def test_the_installed_command_names_itself_in_its_usage(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["mtvae-bench", "run", "--help"])
    with pytest.raises(SystemExit) as exit_:
        script()
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: mtvae-bench run ")
    monkeypatch.setattr(sys, "argv", ["mtvae-bench", "--bogus"])
    with pytest.raises(SystemExit):
        script()
    assert capsys.readouterr().err == "error: unrecognized arguments: --bogus (see `mtvae-bench --help`)\n"


@pytest.mark.parametrize("args, said", [
    (("run", "--siute", "smoke"), "unrecognized arguments: --siute (did you mean '--suite'?) (see `python -m "
                                  "benchmark run --help`)"),
    (("run", "--suite", "smoke", "--epoch", "3"), "unrecognized arguments: --epoch 3 (did you mean '--epochs'?)"),
    (("search", "--famly", "vae", "--config", "1", "--method", "baseline"), "unrecognized arguments: --famly "
                                                                            "(did you mean '--family'?)"),
    (("run",), "the following arguments are required: --suite (see"),  # nothing mistyped: the missing one
    # arguments in the wrong place: where they go
    (("run", "smoke"), "the following arguments are required: --suite (did you mean `--suite smoke`?)"),
    (("report", "smoke"), "unrecognized arguments: smoke (did you mean `--suite smoke`?)"),
    (("report", "--suite", "a", "b"), "unrecognized arguments: b (did you mean `--suite b`?)"),  # it repeats
    (("run", "--suite", "smoke", "extra"), "unrecognized arguments: extra (see"),  # run takes one
    (("suites", "--suite", "smoke"), "unrecognized arguments: --suite (it takes the suite alone: "
                                     "`python -m benchmark suites smoke`)"),
    (("suites", "--suite=smoke"), "unrecognized arguments: --suite=smoke (it takes the suite alone: "
                                  "`python -m benchmark suites smoke`)"),
    (("--quiet", "run", "--suite", "smoke"), "unrecognized arguments: --quiet (an option of run: give it after the "
                                             "command, `python -m benchmark run --quiet ...`) (see `python -m "
                                             "benchmark --help`)"),
    (("--verison",), "unrecognized arguments: --verison (did you mean '--version'?)"),
    (("suites", "smoke", "--suite", "quick"), "unrecognized arguments: --suite quick (it takes the suite alone: "
                                              "`python -m benchmark suites smoke quick`)"),
    (("report", "smoke", "quick"), "unrecognized arguments: smoke quick (did you mean `--suite smoke --suite quick`?)"),
    (("run", "my suite.toml"), "the following arguments are required: --suite (did you mean `--suite 'my "
                               "suite.toml'`?)"),
    (("--command", "run"), "unrecognized arguments: --command (see"),  # a stray the top level cannot place
    (("studies", "--name", "show", "x"), "unrecognized arguments: --name (see `python -m benchmark studies show"),
    (("studies", "show", "--suite", "my run"), "unrecognized arguments: --suite (a run's study is named after its "
                                               "suite: `python -m benchmark studies show 'suite-my run'`)"),
    (("studies", "plot", "--suite=mine"), "unrecognized arguments: --suite (a run's study is named after its suite: "
                                          "`python -m benchmark studies plot suite-mine`)"),
    # the other options kept, and their values not taken for suites
    (("suites", "--suite", "sub/my.toml", "--limit", "100"), "unrecognized arguments: --suite (it takes the suite "
                                                             "alone: `python -m benchmark suites sub/my.toml --limit "
                                                             "100`)"),
    (("studies", "show", "--studies-dir", "out/st", "--suite=mine"), "unrecognized arguments: --suite (a run's "
     "study is named after its suite: `python -m benchmark studies show --studies-dir out/st suite-mine`)"),
    (("studies", "plot", "--suite", "mine", "--out", "figs"), "unrecognized arguments: --suite (a run's study is "
     "named after its suite: `python -m benchmark studies plot suite-mine --out figs`)"),
])
def test_a_mistyped_option_is_named_with_the_one_meant_not_as_a_missing_required_one(tmp_path, capsys, args, said):
    with pytest.raises(SystemExit) as stop:
        cli(tmp_path, *args)
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {said}")


@pytest.mark.parametrize("args, said", [
    (("run", "--suite", "quick", "--suite=smoke"),
     "--suite given twice (quick, smoke): `python -m benchmark run` takes one suite, give each its own command (see "
     "`python -m benchmark run"),
    (("prior", "--suite", "a", "--suite", "b", "--suite", "a"),
     "--suite given 3 times (a, b, a): `python -m benchmark prior` takes one suite, give each its own command"),
    (("run", "--suite", "smoke", "--params-from", "a", "b", "--quiet", "--params-from", "c"),
     "--params-from given twice: list its values after one, `--params-from a b c`"),
    (("bench", "--methods", "baseline", "--methods", "single"),
     "--methods given twice: list its values after one, `--methods baseline single` (see `python -m benchmark bench"),
])
def test_a_list_option_or_a_commands_one_suite_given_twice_is_refused_not_the_last_kept(tmp_path, capsys, args,
                                                                                          said):
    # argparse kept the last alone: `run --suite quick --suite smoke` trained smoke, without a word on quick.
    with pytest.raises(SystemExit) as stop:
        cli(tmp_path, *args)
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {said}")


def test_a_list_of_suites_given_to_run_is_refused_as_one_suite_per_command(tmp_path, capsys):
    # It said "unknown suite 'quick,smoke'", as if a suite of that name were meant.
    assert cli(tmp_path, "run", "--suite", "quick,smoke") == 2
    assert one_line_error(capsys) == ("error: --suite quick,smoke: `python -m benchmark run` takes one suite, give "
                                      "each its own command")


def test_a_suite_given_again_alike_or_after_a_double_dash_is_taken_and_another_option_given_again_overrides():
    args = build_parser().parse_args(["run", "--suite", "smoke", "--suite=smoke", "--epochs", "2", "--epochs", "3"])
    assert (args.suite, args.epochs) == ("smoke", 3)  # a script's defaults, then the caller's
    args = build_parser().parse_args(["studies", "show", "--storage", "a", "--", "--storage"])  # a value after --
    assert (args.storage, args.name) == ("a", "--storage")
