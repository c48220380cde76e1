"""`run` and `suites`: train a suite over its folds; list suites with their size and estimated cost."""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.checks import flagged, messages, problems_error, problems_of
from benchmark.cli.search import STUDIES_DIR_HELP, study_place
from benchmark.config import FOLDER_PREFIX, PRECISIONS
from benchmark.export import recorded_command
from benchmark.params_from import NotASearch, begun_bests, best_configurations, tuning_notes
from benchmark.processes import busy_note, check_workers, exit_warnings, our_load
from benchmark.progress import duration
from benchmark.results import go_on_with, read_meta, tuned_from
from benchmark.storage import (StoreConfig, absolute_url, check_heartbeat, check_storage_option, safe_url, same_storage,
                               setting_text, settings_differ, versioned)
from benchmark.store import parse_unit, study_name
from benchmark.studies import StudyPlace, study_names
from benchmark.suites import (PixelCountError, Suite, builtin_suites, get_suite, is_suite_file, limited, pool_images,
                              tuned_name)
from benchmark.tables import text_table

if TYPE_CHECKING:
    from benchmark.run_status import RunSummary


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help="Optuna storage URL (default: <suite>.db under --studies-dir), "
                                          "e.g. postgresql://user:pass@host/db to share work across machines")
    parser.add_argument("--studies-dir", type=Path, help=STUDIES_DIR_HELP)
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="where results are exported (default results/)")
    parser.add_argument("--artifacts-dir", type=Path,
                        help="where best-epoch weights go (default <results-dir>/<suite>/artifacts); a folder "
                             "every machine sees, when machines keep their own --results-dir")


INTERRUPTED = "interrupted: finished work is stored; run the same command again to resume"
ENDED_ANYWAY = "interrupted once every unit had ended: nothing is left to resume"


def store_config(args: argparse.Namespace) -> StoreConfig:
    place = study_place(args)
    return StoreConfig(storage=place.storage, studies_dir=place.folder, results_dir=args.results_dir,
                       # Absolute: the results record where each checkpoint is, for `report` run elsewhere.
                       artifacts_dir=args.artifacts_dir.absolute() if args.artifacts_dir else None,
                       heartbeat_interval=args.heartbeat)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="train every configuration of a suite over its folds (resumable)",
                         description="Train every (configuration, fold) of a suite. Units live in an Optuna "
                                     "study: rerun the same command to resume; point several processes or "
                                     "machines at one --storage to share the work.")
    run.add_argument("--suite", required=True, help="smoke | quick | full, or a path to a suite .toml file")
    run.add_argument("--dataset", help="mnist5k | digits | mnist | cifar10 | celeba | folder:PATH")
    run.add_argument("--data-root", help="folder holding torchvision datasets (mnist, cifar10, celeba)")
    run.add_argument("--download", action="store_true", help="download mnist/cifar10/celeba into --data-root")
    run.add_argument("--epochs", type=int, help="override the suite's epochs per fold")
    run.add_argument("--folds", type=int, help="override the number of folds (>= 2)")
    run.add_argument("--repeats", type=int, help="repeat the k-fold split R times with new shuffles "
                                                 "(scikit-learn RepeatedKFold; default 1)")
    run.add_argument("--seed", type=int, help="override the suite seed (folds and per-unit seeds)")
    run.add_argument("--limit", type=int, help="use at most this many training images")
    run.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the suite's, auto: CUDA when present)")
    run.add_argument("--precision", choices=PRECISIONS,
                     help="bf16 autocast for training: auto = on an Ampere or later GPU (default), or as the study "
                          "already trains; bf16 also on a CPU with AVX-512 BF16 or AMX (faster there, different "
                          "numbers); refused on a CPU without AVX-512")
    run.add_argument("--name", help="file the run under this name instead of the suite's (its study, "
                                    "results/<name>.csv, `report --suite <name>`): a variant made with other "
                                    "options then keeps its own results beside the suite's")
    run.add_argument("--params-from", nargs="+", metavar="STUDY",
                     help="use the best parameters of these `search` studies for the configurations they cover "
                          "(the run is then named <suite>-tuned, unless --name is given)")
    run.add_argument("--search-storage",
                     help="storage of the --params-from studies (default: each study's SQLite file under "
                          "--studies-dir, studies/ by default, as `search` made it)")
    run.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    run.add_argument("--fold-parallel", choices=("auto", "on", "off"), default="auto",
                     help="train the folds of a configuration together as one vectorised ensemble "
                          "(auto: on CUDA only; not with bf16 on a CPU)")
    run.add_argument("--heartbeat", type=int, default=10,
                     help="seconds between worker heartbeats; a worker silent for five beats is taken for "
                          "dead (default 10; a study keeps its first run's)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    add_store_arguments(run)
    run.set_defaults(handler=cmd_run)

    suites = sub.add_parser("suites", help="list the built-in suites (or the suites named) with their size and "
                                           "estimated cost")
    suites.add_argument("suites", nargs="*", metavar="SUITE", help="a built-in suite or a suite TOML file "
                                                                   "(default: every built-in suite)")
    # the options of `run` that change a suite's size and cost, for the cost of a run given them
    suites.add_argument("--epochs", type=int, help="as `run --epochs`: the cost with these epochs per fold")
    suites.add_argument("--folds", type=int, help="as `run --folds`")
    suites.add_argument("--repeats", type=int, help="as `run --repeats`")
    suites.add_argument("--limit", type=int, help="as `run --limit`: the cost on at most this many training images")
    suites.add_argument("--dataset", help="as `run --dataset`: the cost on this dataset's images (a folder's counted)")
    suites.set_defaults(handler=cmd_suites)


def resolve_suite(args: argparse.Namespace, store: StoreConfig) -> tuple[Suite, list[str]]:
    """The suite ``run``'s arguments name, and the notes on what ``--params-from`` changed in it;
    ``store``: where runs are filed (``store_config(args)``)."""
    base, suite = _with_overrides(args, store)
    filed = None if args.name or args.params_from else _filed_note(args.suite, base, suite, store)
    notes = [filed] if filed else []
    if args.params_from:
        check_storage_option("--search-storage", args.search_storage, "the searches under --studies-dir")
        searches = _search_place(args.params_from, args.search_storage, store.studies_dir)
        try:
            best = best_configurations(args.params_from, searches)
        except NotASearch as err:
            if args.search_storage:
                raise
            raise ValueError(f"{err}; for one kept elsewhere, --studies-dir DIR or --search-storage URL") from None
        filed = args.name or tuned_name(suite.name)
        best, kept_notes = begun_bests(best, searches, store.url(filed), study_name(filed))
        base, suite = suite, suite.with_best_params(best)
        suite = replace(suite, search_storages=tuple((name, safe_url(absolute_url(searches.url(name))))
                                                     for name in args.params_from))
        notes = suite.replacement_notes(base, best) + kept_notes + tuning_notes(args.params_from, searches, suite)
    elif args.name in (None, suite.name):  # the suite's own run, after its tuned one, takes what that did not tune
        suite = replace(suite, takes_from=tuned_name(suite.name))
    if args.name and is_suite_file(args.name):
        raise ValueError(f"--name {args.name}: a name to file the run under, not a .toml file (without --name, "
                         "a suite file's run is filed under the file's `name`)")
    if args.name in builtin_suites() and args.name != suite.name:
        raise ValueError(f"--name {args.name} is a built-in suite's name; give the run a name of its own")
    suite = overridden(suite, name=args.name)
    _check_tuned_from_the_same(suite, set(args.params_from or ()), store)
    _check_same_storage(suite, store)
    from benchmark.data import unused_source_note

    unused = unused_source_note(suite.dataset, args.data_root, args.download)
    return suite, notes + ([unused] if unused else [])


def one_suite(prog: str) -> str:
    """Why command ``prog`` refuses two suites at once."""
    return f"`{prog}` takes one suite, give each its own command"


def _with_overrides(args: argparse.Namespace, store: StoreConfig) -> tuple[Suite, Suite]:
    """The suite ``run``'s arguments name, as its file or name gives it and with their overrides, checked."""
    if "," in args.suite and not is_suite_file(args.suite) and not Path(args.suite).exists():  # a list, as report's
        raise ValueError(f"--suite {args.suite}: {one_suite(args.parser.prog)}")
    suite = suite_or_run(args.suite, store)
    if not args.name and (clash := builtin_name_clash(args.suite, suite)):
        raise ValueError(f"{clash}; give the file a name of its own, or the run --name")
    return suite, checked(overridden(suite, dataset=args.dataset, data_root=args.data_root, epochs=args.epochs,
                                     folds=args.folds, repeats=args.repeats, seed=args.seed, limit=args.limit,
                                     device=args.device, precision=args.precision,
                                     download=args.download or None),
                          args.suite)


def overridden(suite: Suite, **values) -> Suite:
    """``suite.override(**values)``, values given by the flags of their names (``folds``: ``--folds``): a problem
    that one flag's value brings alone is named by its flag, as the user typed it, not by the suite's field."""
    try:
        return suite.override(**values)
    except ValueError as err:
        problems = messages(err)
    keys = {}
    for key, value in values.items():
        if value is not None:
            for message in problems_of(lambda: suite.override(**{key: value})):
                keys.setdefault(message, key)
    raise problems_error([flagged(message, keys[message]) if message in keys else message for message in problems])


def _filed_note(given: str, base: Suite, suite: Suite, store: StoreConfig) -> str | None:
    """A note when options change suite ``base``'s settings while its run is filed under its name:
    a later run of it without them is refused. Said before the first export only."""
    if (store.results_dir / f"{suite.name}.csv").exists():
        return None
    # "auto" takes the precision a study has: a later run without --precision is not refused.
    changed = [key for key in settings_differ(versioned(base.settings()), versioned(suite.settings()))
               if key != "precision" or base.train.precision != "auto"]
    if not changed:
        return None
    shown = ", ".join(f"{key} {setting_text(suite.settings()[key])}" for key in changed)
    return (f"note: with {shown}, this run is filed under the suite's own name, {suite.name!r}: a later run of "
            f"{given} without those options is refused; --name files such a variant apart")


def _search_place(names: list[str], storage: str | None, studies_dir: Path) -> StudyPlace:
    """Where the --params-from searches ``names`` are: ``storage`` (--search-storage), else under the
    run's --studies-dir (also with --storage), else under studies/, where `search` put them before
    it took --studies-dir."""
    if storage:
        return StudyPlace(storage)
    here = StudyPlace(folder=studies_dir)
    if any(name not in study_names(here.url(name)) for name in names):
        default = StudyPlace()
        if all(name in study_names(default.url(name)) for name in names):
            return default
    return here


def _check_tuned_from_the_same(suite: Suite, studies: set[str], store: StoreConfig) -> None:
    """Refuse to file a run tuned from ``studies`` (none: an untuned run) under a name whose results
    came from a run tuned from other studies, or from none: the later export would replace them."""
    before = tuned_from(store.results_dir, suite.name)
    if before is None or before == studies:
        return
    held = f"the run tuned from {', '.join(sorted(before))}" if before else "a run without --params-from"
    takes = f"takes {', '.join(sorted(studies))}" if studies else "takes no --params-from"
    command = recorded_command(suite.name, store)
    resume = f"{go_on_with(command)}; " if command else ""
    raise ValueError(f"{suite.name!r} holds {held} ({store.results_dir / suite.name}.csv); this one {takes}: "
                     f"{resume}for a run of its own, give it a --name, or its export would replace that run's results")


def _check_same_storage(suite: Suite, store: StoreConfig) -> None:
    """Refuse a run that would start its study anew while results exported from that study are
    filed under its name (another --storage or --studies-dir, or another working folder): its
    export would replace them with the new study's units. The study is looked for, not its URL
    compared: one storage has many names (a relative or absolute path, another host name)."""
    name, results, url = suite.name, store.results_dir / f"{suite.name}.csv", store.url(suite.name)
    study = study_name(suite)
    if not results.is_file() or study in study_names(url):
        return
    recorded = read_meta(store.results_dir, name).get("storage")
    start_over = (f"start over, move its files away first ({results}, {name}_history.csv, {name}_meta.json and "
                  f"the {name}/ folder beside it, with {name}_prior.csv if there is one)")
    if isinstance(recorded, str) and same_storage(recorded, url):
        raise ValueError(f"{results} holds the results of study {study}, which {safe_url(url)} no longer has (deleted "
                         f"since?): this run would start it anew, and its export would replace them. To {start_over}; "
                         "for a run of its own, a --name (or another --results-dir)")
    exported = f" (exported from {recorded})" if isinstance(recorded, str) else ""
    raise ValueError(f"{results} holds the results of study {study}{exported}, and {safe_url(url)} has no such study: "
                     "this run would start it anew, and its export would replace them. To go on with that study, "
                     f"give the storage it is in (--storage or --studies-dir); to {start_over}; for a run of its own, "
                     "a --name (or another --results-dir)")


def builtin_name_clash(given: str, suite: Suite) -> str | None:
    """Why suite file ``given`` cannot run under its own name: it is a built-in suite's, or None."""
    if given in builtin_suites() or suite.name not in builtin_suites():
        return None
    return (f"suite file {given} is named {suite.name!r}, as a built-in suite: its run would share that suite's "
            "study and results")


def checked(suite: Suite, given: str) -> Suite:
    """``suite`` (named ``given``: a built-in's name or a file), its pixel counts checked against the
    side of the images it loads."""
    try:
        suite.check_pixel_counts()
    except PixelCountError as err:
        raise ValueError(f"suite file {given}: {err}") from None
    return suite


def command_line(argv: list[str]) -> str:
    """``argv`` as a shell command, with the password of any storage URL in it hidden."""
    def shown(arg: str) -> str:
        option, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        return option + equals + safe_url(value) if "://" in value else arg

    return "python -m benchmark " + shlex.join(shown(arg) for arg in argv)


def cmd_suites(args: argparse.Namespace) -> int:
    sizes = {"epochs": args.epochs, "folds": args.folds, "repeats": args.repeats, "limit": args.limit,
             "dataset": args.dataset}
    named = [checked(overridden(suite_or_run(name, StoreConfig()), **sizes), name) for name in args.suites]
    for name, suite in zip(args.suites, named):
        if clash := builtin_name_clash(name, suite):
            print(f"warning: {clash}: `run --suite {name}` needs a --name", file=sys.stderr)
    shown = named or [overridden(suite, **sizes) for suite in builtin_suites().values()]
    table = [[suite.name, len(suite.configurations), suite.folds, suite.units, suite.train.epochs,
              limited(suite.dataset_images, suite.limit) or "all", duration(suite.cpu_seconds()), suite.description]
             for suite in shown]
    print(text_table(table, ("suite", "configs", "folds", "units", "epochs", "images", "est. 2-core CPU",
                             "description"), ("left", *["right"] * 6, "left")))
    given = [f"--{key} {value}" for key, value in sizes.items() if value]
    if given:  # the descriptions are of the suites as their files give them
        print(f"(with {', '.join(given)}; the descriptions give each suite as it is defined)")
    for suite in shown:  # a folder on another machine, or a mistyped path, which `run` would refuse
        if suite.dataset.startswith(FOLDER_PREFIX) and suite.dataset_images is None:
            print(f"note: {suite.dataset} holds no images to split here (no such folder, or fewer than two "
                  f"images): {suite.name}'s estimate is of {pool_images(None, suite.limit):,} training images",
                  file=sys.stderr)
    for suite in shown if named else ():  # a suite asked for by name: what it trains, too
        print(f"\n{suite.name}: its configurations, each trained on {suite.folds * suite.repeats} folds "
              "(est. 2-core CPU per fold)")
        listing = text_table([[config_id, duration(unit)] for config_id, unit in suite.unit_seconds().items()],
                             (), ("left", "right"), tablefmt="plain")
        print(textwrap.indent(listing, "  "))
    return 0


def suite_or_run(name: str, store: StoreConfig) -> Suite:
    """The suite ``name`` names; for the name a run was filed under in ``store`` (``--name``,
    ``-tuned``), an error that gives the command that run recorded, whose suite is the one meant."""
    try:
        return get_suite(name)
    except ValueError as err:
        if Path(name).is_file():  # a suite file without .toml, as the error says; a run of it recorded this command
            raise
        if command := recorded_command(name, store):
            raise ValueError(f"{name!r} is the name a run is filed under, not a suite: {go_on_with(command)}") from None
        if (store.studies_dir / f"{name}.db").exists() or (store.results_dir / f"{name}.csv").exists():
            raise ValueError(f"{err}. There are results filed under {name!r}: a run named by --name or "
                             "--params-from goes on with the command that started it (its --suite, options, "
                             "--params-from and --name)") from None
        raise


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.runner import RunInterrupted, run_suite

    try:
        place, own = study_place(args), []
    except ValueError as err:
        place, own = None, messages(err)
    own += [*problems_of(check_heartbeat, args.heartbeat), *problems_of(check_workers, args.workers)]
    if args.search_storage is not None and not args.params_from:
        own.append("--search-storage is where the --params-from studies are: give it with --params-from")
    if own:  # said with the overrides' problems, so that all are mended at once
        # The suite looked up where the run's studies are, when known: a name a run is filed under is named so
        where = {"storage": place.storage, "studies_dir": place.folder} if place else {}
        raise problems_error(own + problems_of(_with_overrides, args, StoreConfig(results_dir=args.results_dir,
                                                                                  **where)))
    store = store_config(args)
    suite, notes = resolve_suite(args, store)
    try:
        summary = run_suite(suite, store, workers=args.workers, show_progress=not args.quiet,
                            fold_parallel=args.fold_parallel, notes=notes, command=command_line(args.argv))
    except RunInterrupted as stop:
        print_summary(stop.summary, suite)
        print(INTERRUPTED if stop.summary.missing else ENDED_ANYWAY, file=sys.stderr)
        return 130
    print_summary(summary, suite)
    return 0 if summary.missing == 0 and summary.failed == 0 else 1  # scripts can tell a clean run


def print_summary(summary: RunSummary, suite: Suite) -> None:
    from benchmark.cv import fold_label

    # a resumed run's own, or a run's share of what runs at the same time on its storage trained
    own = f" ({summary.trained} by this run)" if summary.trained != summary.done else ""
    print(f"done {summary.done}{own}, failed {summary.failed}, not finished {summary.missing} of {suite.units} "
          f"units in {summary.seconds:.0f} s; results: {summary.results}")
    for key, reason in summary.errors.items():
        config_id, fold = parse_unit(key)
        print(f"  failed {config_id} {fold_label(fold, suite.folds, suite.repeats)}: {reason}")
    for line in exit_warnings(summary.workers, summary.worker_failures, summary.workers_killed,
                              "a unit they left unfinished is trained again by a worker still running or by the next run"):
        print(line, file=sys.stderr)
    # The loads its units recorded, as the report's caveat reads them; not the load as it ends (after Ctrl-C, say)
    if summary.busy_loads and (busy := busy_note(
            f"this run trained {len(summary.busy_loads)} of its {summary.trained} units",
            "their training times (`seconds`, the report's cost column) are high", load=max(summary.busy_loads),
            ours=our_load(summary.workers))):
        print(busy, file=sys.stderr)
