"""`search` (Optuna search of the exponent and loss weights) and `studies` (list / show / plot)."""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from pathlib import Path

from typing import TYPE_CHECKING

from benchmark.checks import flagged, messages, raise_problems
from benchmark.config import PRECISIONS
from benchmark.files import check_folder, check_name
from benchmark.processes import exit_warnings
from benchmark.search import SearchSummary
from benchmark.storage import check_storage_folder, check_storage_option
from benchmark.studies import STUDIES_DIR, StudyPlace, study_names

if TYPE_CHECKING:
    from benchmark.search import SearchOptions
    from benchmark.search_space import SearchSettings

STORAGE_HELP = ("Optuna storage URL (default: the study's own SQLite file under --studies-dir, NAME.db, or the "
                "file there that already holds it)")
STUDIES_STORAGE_HELP = f"{STORAGE_HELP}; list: every SQLite file under --studies-dir"
STUDIES_DIR_HELP = "where SQLite studies live without --storage (default studies/)"

SEARCH_EPILOG = """\
searched parameters and default ranges (one trial = one k-fold cross-validation):
  exponent        single decoder only        1 .. 100, log-uniform (the thesis tried 20..60)
  w1, w2          multidecoder only          0.1 .. 10, log-uniform
  beta            every method, no SoftAdapt 0.1 .. 10, log-uniform: a Gaussian VAE's KL weight;
                                             0.025 .. 2.5, log-uniform: a VQ-VAE's commitment weight
  softadapt_beta  with --softadapt           1e-5 .. 1e-1, log-uniform (W1, W2 stay at defaults, and beta
                                             unless given a --range: it is inside the latent term)
override with --range NAME=LOW:HIGH[:log|linear], e.g. --range exponent=10:60:linear

The objective is the mean validation recon (per-pixel MSE) over the folds (another with
--objectives latent or recon_cond; the pruner weighs the running mean of it); with
--objectives recon,latent Optuna keeps a Pareto front and nothing is pruned (Optuna cannot
prune multi-objective trials). Rerun the same command to continue the study until it has
--trials trials (complete, pruned, running or diverged; a trial interrupted by Ctrl-C or a
killed worker does not count). Point several processes or machines at one --storage
(e.g. postgresql+psycopg2://user:pass@host/db) to share one study.

examples:
  python -m benchmark search --family vq-vae --config 1 --method single --sampling gaussian --trials 50
  python -m benchmark search --family vae --config 2 --method multidecoder --sampling uniform --softadapt
  python -m benchmark studies show search-vq-vae-1-single-gaussian
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wraps option help at spaces only, so that names such as search-vae-1-single stay whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    search = sub.add_parser("search", help="Optuna search of the power-law exponent and loss weights (resumable)",
                            description="Tune the power-law exponent and the loss weights of one model config "
                                        "and method with Optuna; every trial is a k-fold cross-validation on the "
                                        "same folds as `run`.",
                            epilog=SEARCH_EPILOG, formatter_class=_HelpFormatter)
    search.add_argument("--family", "--model", dest="family", required=True,
                        help="vae | vq-vae (a suite file's `family`; --model is another name for it)")
    search.add_argument("--config", required=True, type=int, help="model config (vae: 1-2, vq-vae: 1-3)")
    search.add_argument("--method", required=True, help="multidecoder | single | baseline")
    search.add_argument("--sampling", help="multidecoder: exact | uniform | gaussian; single: uniform | gaussian "
                                           "(none for the baseline)")
    search.add_argument("--softadapt", action="store_true", help="balance the losses with SoftAdapt; tune its beta")
    search.add_argument("--objectives", default="recon",
                        help="recon (default), latent or recon_cond; several, e.g. recon,latent, for a Pareto front")
    search.add_argument("--range", action="append", default=[], metavar="NAME=LOW:HIGH[:log|linear]",
                        help="override a parameter's range (repeatable)")
    search.add_argument("--trials", type=int, default=50, help="trials the study should have in total (default 50)")
    search.add_argument("--timeout", type=float, help="start no new trial after this many seconds")
    search.add_argument("--pruner", default="median", help="median (default) | none")
    search.add_argument("--pruner-startup", type=int,
                        help="complete trials before the median pruner may prune (default 5)")
    search.add_argument("--dataset", default="mnist5k", help="mnist5k | digits | mnist | cifar10 | celeba | folder:PATH")
    search.add_argument("--data-root", help="folder holding torchvision datasets (mnist, cifar10, celeba)")
    search.add_argument("--download", action="store_true", help="download mnist/cifar10/celeba into --data-root")
    search.add_argument("--limit", type=int, help="use at most this many training images")
    search.add_argument("--epochs", type=int, default=100, help="epochs per fold (default 100, as the full suite)")
    search.add_argument("--batch-size", type=int, default=128,
                        help="training batch size (default 128, as the full suite)")
    search.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3, as the full suite)")
    search.add_argument("--weight-decay", type=float, default=1e-2,
                        help="AdamW weight decay (default 0.01, as the full suite)")
    search.add_argument("--folds", type=int, default=5, help="folds per trial (default 5)")
    search.add_argument("--seed", type=int, default=0, help="seed of the folds and of training (default 0)")
    search.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: CUDA when present)")
    search.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="bf16 autocast for training: auto = on an Ampere or later GPU (default), or as the "
                             "study already trains; bf16 also on a CPU with AVX-512 BF16 or AMX (faster there, "
                             "different numbers); refused on a CPU without AVX-512")
    search.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    search.add_argument("--heartbeat", type=int, default=10,
                        help="seconds between worker heartbeats; a worker silent for five beats is taken for "
                             "dead (default 10; a study keeps its first run's)")
    search.add_argument("--storage", help=STORAGE_HELP)
    search.add_argument("--studies-dir", type=Path, help=STUDIES_DIR_HELP)
    search.add_argument("--study-name", help="a letter or digit, then letters, digits, '.', '_' and '-', as it "
                                             "names files (default: "
                                             "search-<family>-<config>-<method>, then -<sampling> and "
                                             "-softadapt when given, and -<objective> for each objective when "
                                             "--objectives is other than recon, e.g. "
                                             "search-vae-2-multidecoder-exact-recon-latent)")
    search.add_argument("--quiet", action="store_true", help="no progress bar")
    search.set_defaults(handler=cmd_search)

    studies = sub.add_parser("studies", help="list, show or plot Optuna studies",
                             description="Inspect Optuna studies (default: list every study under --studies-dir, "
                                         "studies/ by default: suites and searches).")
    studies.set_defaults(handler=cmd_list)
    studies.add_argument("--storage", help=STUDIES_STORAGE_HELP)
    studies.add_argument("--studies-dir", type=Path, help=STUDIES_DIR_HELP)
    actions = studies.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="name, direction(s), trial counts and best value of every study")
    show = actions.add_parser("show", help="best parameters, top-5 trials and per-fold values of the best trial")
    show.add_argument("name", help="study name (see `studies list`)")
    plot = actions.add_parser("plot", help="Optuna's plots as PNG and PDF files in reports/studies/NAME/")
    plot.add_argument("name", help="study name (see `studies list`)")
    plot.add_argument("--out", type=Path, default=Path("reports/studies"), help="where the study's folder of plots goes (default reports/studies/, so reports/studies/<name>/)")
    for parser, handler in ((listing, cmd_list), (show, cmd_show), (plot, cmd_plot)):
        # SUPPRESS: given before or after the action, and not reset by the action's default
        parser.add_argument("--storage", default=argparse.SUPPRESS,
                            help=STUDIES_STORAGE_HELP if parser is listing else STORAGE_HELP)
        parser.add_argument("--studies-dir", type=Path, default=argparse.SUPPRESS, help=STUDIES_DIR_HELP)
        parser.set_defaults(handler=handler)


def study_place(args: argparse.Namespace) -> StudyPlace:
    """Where the command's studies are: ``--storage``, or the SQLite files under ``--studies-dir``."""
    check_storage_option("--storage", args.storage, "the SQLite files under --studies-dir")
    if args.storage and args.studies_dir:
        raise ValueError("--studies-dir is where SQLite studies go without --storage: give one or the other")
    return StudyPlace(args.storage, args.studies_dir or STUDIES_DIR)


def _checked(args: argparse.Namespace) -> tuple[SearchSettings, SearchOptions, StudyPlace]:
    """The search's settings, options and study place, or one error naming every problem of them."""
    from benchmark.search import PRUNERS, SearchOptions
    from benchmark.search_space import SearchSettings, parse_range

    problems, ranges = [], {}
    for text in args.range:
        try:
            name, value = parse_range(text)
        except ValueError as err:
            problems.append(flagged(str(err), "range"))
        else:
            ranges[name] = value

    def built(make):  # what ``make`` builds, or None with its problems kept
        try:
            return make()
        except ValueError as err:
            problems.extend(messages(err))

    objectives = tuple(o.strip() for o in args.objectives.split(","))
    settings = built(lambda: SearchSettings(
        family=args.family, config=args.config, method=args.method, sampling=args.sampling, softadapt=args.softadapt,
        dataset=args.dataset, limit=args.limit, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, folds=args.folds, seed=args.seed, precision=args.precision,
        objectives=objectives, ranges=ranges))
    options = built(lambda: SearchOptions(
        trials=args.trials, timeout=args.timeout, pruner=args.pruner,
        pruner_startup=5 if args.pruner_startup is None else args.pruner_startup, workers=args.workers,
        device=args.device, data_root=args.data_root, download=args.download, heartbeat=args.heartbeat,
        show_progress=not args.quiet))
    if args.pruner_startup is not None and args.pruner in PRUNERS and args.pruner != "median":
        problems.append(f"--pruner-startup sets when the median pruner starts; this search has --pruner {args.pruner}")
    place = built(lambda: study_place(args))
    if place is not None:  # before the data loads
        built(lambda: check_storage_folder(place.storage) if place.storage
              else check_folder("--studies-dir", place.folder))
        if args.study_name is not None:
            built(lambda: _check_study_name(args.study_name, place))
    raise_problems(problems)
    return settings, options, place


def _check_study_name(name: str, place: StudyPlace) -> None:
    """Refuse a new study's name that cannot name its files (its SQLite file, its figures' folder); a study
    made under such a name before goes on."""
    try:
        check_name(name, "--study-name")
    except ValueError:
        if name not in study_names(place.url(name)):
            raise


def cmd_search(args: argparse.Namespace) -> int:
    from benchmark.search import SearchInterrupted, run_search

    settings, options, place = _checked(args)
    try:
        name = args.study_name or settings.default_study_name()
        summary = run_search(settings, place.url(name), name, options)
    except SearchInterrupted as stop:
        _print_summary(stop.summary, settings.objectives, place)
        print("interrupted: " + ("finished trials are stored; run the same command again to continue the study"
                                 if stop.summary.to_go else "every trial of --trials was done, nothing is left to do"),
              file=sys.stderr)
        return 130
    _print_summary(summary, settings.objectives, place)
    to_go = (f"; {summary.to_go} trial{'s' * (summary.to_go != 1)} to go: run the same command again"
             if summary.to_go else "")
    for line in exit_warnings(options.workers, summary.worker_failures, summary.workers_killed,
                              f"a trial they left unfinished is trained again by a worker still running or by the "
                              f"next run{to_go}"):
        print(line, file=sys.stderr)
    return 1 if summary.worker_failures or (summary.workers_killed and summary.to_go) else 0


def _print_summary(summary: SearchSummary, objectives: tuple[str, ...], place: StudyPlace) -> None:
    counts = summary.counts
    shown = ", ".join(f"{status} {n}" for status, n in counts.items()  # running, waiting: on other workers
                      if n or status in ("complete", "pruned", "failed", "interrupted"))
    total = sum(counts.values())
    print(f"study {summary.study_name}: {total} trial{'s' * (total != 1)} ({shown}); "
          f"this run took {summary.seconds:.0f} s")
    best = summary.best
    if best is not None:
        values = ", ".join(f"{o}={v:.6g}" for o, v in zip(objectives, best.values))
        params = ", ".join(f"{k}={v:.6g}" for k, v in best.params.items())
        print(f"best trial #{best.number}: {values}; {params} ({best.user_attrs.get('config_id', '')})")
    for trial in summary.failed[-5:]:  # the most recent reasons; `studies show` lists them all
        print(f"  trial #{trial.number} failed: {trial.user_attrs['error']}")
    print(f"inspect: python -m benchmark studies show {shlex.quote(summary.study_name)}"  # a line to paste
          + place.flags(summary.study_name, summary.storage_url))


def cmd_list(args: argparse.Namespace) -> int:
    from benchmark.studies import format_study_list, list_all_studies, list_studies, unlisted_studies

    place = study_place(args)
    missing = args.studies_dir is not None and not args.studies_dir.is_dir()  # a mistyped path: no empty list
    rows, skipped = (list_studies(place.storage), []) if place.storage else list_all_studies(place.folder)
    if not missing:
        print(format_study_list(rows, place))
    for reason in skipped:
        print(f"warning: skipped: {reason}", file=sys.stderr)
    if not place.storage:
        for note in unlisted_studies((row.name for row in rows), place.folder):
            print(f"note: {note}", file=sys.stderr)
    if missing:
        raise ValueError(f"no folder {args.studies_dir} (from --studies-dir)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from benchmark.studies import describe_study, load_existing_study

    print(describe_study(load_existing_study(study_place(args), args.name)))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from benchmark.studies import load_existing_study
    from benchmark.study_plots import plot_dir, plot_study

    study = load_existing_study(study_place(args), args.name)
    out = plot_dir(args.out, args.name)
    check_folder("--out", args.out, out)  # before Optuna draws anything
    written, notes = plot_study(study, out)
    if not written:  # e.g. no complete trial yet: nothing asked for was made
        raise ValueError("; ".join(notes) or f"nothing to plot in study {args.name!r}")
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    for path in written:
        print(path)
    return 0
