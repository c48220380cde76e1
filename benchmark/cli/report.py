"""`report`: turn stored results into the thesis table and figures, without retraining."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmark.files import check_folder
from benchmark.suites import get_suite, is_suite_file

SHOWN_MISSING = 5  # on the terminal; missing.txt lists them all


def add_parsers(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="regenerate tables (CSV/LaTeX/Markdown) and figures from results",
                            description="Read results/<suite>.csv (exported by `run`) and write reports/<suite>/: "
                                        "table.csv, table.tex, table.md, index.md, figures/, comparison.md and "
                                        "comparison.tex (where a method has its baseline) and, for a partial suite, "
                                        "missing.txt. Without --suite, every suite in --results-dir (one that "
                                        "cannot be reported is skipped, saying why; the exit status is then 1, or 0 "
                                        "where it has only finished no unit yet). Safe to rerun.")
    report.add_argument("--suite", action="append",
                        help="a suite's name or its .toml file (repeatable; default: every suite in --results-dir)")
    report.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where `run` exported the results (default results/)")
    report.add_argument("--reports-dir", type=Path, default=Path("reports"),
                        help="where to write each suite's report, in a folder of its name (default reports/)")
    report.add_argument("--no-figures", action="store_true",
                        help="tables only (an earlier report's figures are removed, so none is left stale)")
    report.add_argument("--no-checkpoints", action="store_true",
                        help="skip figures that load trained models (reconstruction grids, error vs pixels); "
                             "an earlier report's are removed, so none is left stale")
    report.add_argument("--search-storage", metavar="URL",
                        help="storage of the searches whose parameters a run took (--params-from), for their "
                             "Optuna plots (default: the storage the run read each from; studies/ for a run of "
                             "an earlier version)")
    report.add_argument("--quiet", action="store_true", help="no progress bar of the figures drawn")
    report.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from benchmark.report import InterruptedOnceWritten, write_report
    from benchmark.results import NothingDoneYet, ReportError, available_suites, load_suite, results_dir_flag
    from benchmark.storage import check_storage_option
    from benchmark.studies import StudyPlace

    check_storage_option("--search-storage", args.search_storage, "the searches each run recorded")
    for listed in args.suite or []:
        if "," in listed and not is_suite_file(listed):  # a list, as --objectives takes one
            each = " ".join(f"--suite {shlex.quote(name.strip())}" for name in listed.split(",") if name.strip())
            raise ReportError(f"--suite names one suite: give each its own, {each}")
    given = {path: get_suite(path) for path in args.suite or [] if is_suite_file(path)}  # each file read once
    files = {suite.name: (path, suite) for path, suite in given.items()}  # name → the file given and its suite
    # a suite named twice (by name and by its file, say) is reported once
    suites = (list(dict.fromkeys(given[s].name if s in given else s for s in args.suite)) if args.suite
              else available_suites(args.results_dir))
    for name, (path, _) in files.items():
        beside = Path(path).parent / "results"  # where a run of the file in its own folder exported them
        if not (args.results_dir / f"{name}.csv").is_file() and (beside / f"{name}.csv").is_file() and \
                beside.resolve() != args.results_dir.resolve():
            raise ReportError(f"no results for suite {name!r} in {args.results_dir}/, but {beside}/ beside {path} has "
                              f"them: give `--results-dir {shlex.quote(str(beside))}` (a run exports to results/ in "
                              "the folder it ran in)")
    if not args.results_dir.is_dir() and args.results_dir != Path("results"):  # a mistyped path, not "run it first"
        raise ReportError(f"no folder {args.results_dir}/ (--results-dir): give the folder a run exported its "
                          "results to (results/ where it ran)")
    if not suites and not args.results_dir.is_dir():
        raise ReportError(f"no folder {args.results_dir}/: run `python -m benchmark run --suite smoke` first, or give "
                          "--results-dir the folder a run exported its results to (results/ where it ran)")
    if not suites:
        raise ReportError(f"no results in {args.results_dir}/; run `python -m benchmark run --suite smoke"
                          f"{results_dir_flag(args.results_dir)}` first")
    for suite in suites:  # every report's folder before the first report is written
        check_folder("--reports-dir", args.reports_dir, args.reports_dir / suite)
    # and every named suite's results: one that cannot be reported (none, or unreadable ones) is an error
    loaded = {suite: load_suite(args.results_dir, suite) for suite in suites} if args.suite else {}
    skipped: list[str] = []
    broken: list[str] = []
    searches_in = StudyPlace(args.search_storage) if args.search_storage else None
    for suite in suites:
        try:
            summary = write_report(args.results_dir, suite, args.reports_dir / suite, figures=not args.no_figures,
                                   checkpoints=not args.no_checkpoints, searches_in=searches_in,
                                   progress=not args.quiet, results=loaded.get(suite))
        except InterruptedOnceWritten as interrupt:
            rest = suites[suites.index(suite) + 1:]
            raise InterruptedOnceWritten(f"{interrupt}; not reported: {', '.join(rest)} (run the same command again)"
                                         if rest else str(interrupt)) from None
        except ReportError as error:
            if args.suite:  # asked for by name: an error
                raise
            # Every suite in the folder: one that has nothing to report yet must not stop the others.
            print(f"{suite}: skipped: {error}", file=sys.stderr)
            skipped.append(suite)
            if not isinstance(error, NothingDoneYet):  # e.g. unreadable results: the exit status says so too
                broken.append(suite)
            continue
        count = len(summary.configurations)
        print(f"{suite}: {count} configuration{'s' * (count != 1)}, {len(summary.files)} files in {summary.out_dir}")
        for missing in summary.missing[:SHOWN_MISSING]:
            print(f"  missing: {missing.describe()}")
        if len(summary.missing) > SHOWN_MISSING:
            more = len(summary.missing) - SHOWN_MISSING
            print(f"  ... and {more} more configuration{'s' * (more != 1)} short of folds: "
                  f"{summary.out_dir / 'missing.txt'}")
        if suite in files:  # its results are the last export's, which may be another file's listing
            path, listed = files[suite]
            unexported = [c.id for c in listed.configurations if c.id not in summary.configurations]
            if unexported:
                print(f"  warning: {path} lists {len(unexported)} configuration(s) the results do not have "
                      f"({', '.join(unexported[:3])}{' …' * (len(unexported) > 3)}): the last run to export them listed "
                      f"others; `{_run_of(path, suite, args.results_dir)}` trains what is missing and exports them")
        for caveat in summary.caveats:
            print(f"  caveat: {caveat}")
        for warning in summary.warnings:
            print(f"  warning: {warning}")
    if len(skipped) == len(suites):
        raise ReportError(f"nothing to report: every suite in {args.results_dir}/ was skipped (why: above)")
    if broken:
        print(f"not reported: {', '.join(broken)} (why: above)", file=sys.stderr)
        return 1
    return 0


def _run_of(path: str, suite: str, results_dir: Path) -> str:
    """The `run` that trains what suite file ``path`` lists and the results of ``suite`` lack: the command
    their last export recorded (with the folders and storage of its study) where it ran this same file,
    else the file's own."""
    from benchmark.results import read_meta, recorded_option, results_dir_flag

    command = read_meta(results_dir, suite).get("command")
    ran = recorded_option(command, "--suite")
    if command and ran and Path(ran).resolve() == Path(path).resolve():
        return command
    return f"python -m benchmark run --suite {shlex.quote(path)}{results_dir_flag(results_dir)}"
