"""`prior`: the VQ-VAE second stage — a Gated PixelCNN prior per VQ-VAE configuration of a finished run."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmark.checks import said_of_flags
from benchmark.suites import suite_name

# ``run_prior_stage``'s numbers, each given by the flag of its name
PRIOR_NUMBERS = ("epochs", "batch_size", "lr", "samples", "temperature", "hidden", "layers", "kernel", "fold")
# those only training uses: given with --redraw, they would do nothing
TRAINING_ONLY = ("epochs", "batch_size", "lr", "hidden", "layers", "kernel", "fold")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    prior = sub.add_parser(
        "prior", help="train the Gated PixelCNN prior of each VQ-VAE configuration of a finished run",
        description="For every VQ-VAE configuration of a finished run (or those named with --config): take one "
                    "fold's checkpoint (the same fold for every configuration, so that their priors are scored on "
                    "the same images), rebuild that fold's train/validation split, encode both into code "
                    "maps, train a Gated PixelCNN on the training codes and score it on the validation codes. "
                    "Writes results/<suite>/priors/<name>.pt and results/<suite>_prior.csv (rerunning replaces "
                    "a configuration's row, and refuses to mix rows made with other settings; Ctrl-C keeps the "
                    "configurations finished, and a rerun trains every one anew unless --config names some); "
                    "`report` then adds a Prior NLL column and generated-image figures.")
    prior.add_argument("--suite", required=True,
                       help="a suite that `run` finished, by name or .toml file (its results CSV must exist)")
    prior.add_argument("--config", dest="configs", nargs="+", action="extend", metavar="CONFIG_ID",
                       help="only these VQ-VAE configurations, e.g. vq-vae/1/baseline (repeatable)")
    prior.add_argument("--fold", type=int, help="the fold to use (default: the lowest fold COMPLETE in every VQ-VAE "
                                                "configuration of the suite)")
    prior.add_argument("--epochs", type=int, default=30,
                       help="prior training epochs (default 30; the epoch kept is the one with the lowest NLL on a "
                            "tenth of the training codes, held out, so that the validation NLL is not flattered)")
    prior.add_argument("--batch-size", type=int, default=128, help="code maps per step (default 128)")
    prior.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    prior.add_argument("--hidden", type=int, default=64, help="PixelCNN channels (default 64)")
    prior.add_argument("--layers", type=int, default=8, help="gated layers (default 8)")
    prior.add_argument("--kernel", type=int, default=5,
                       help="side of the PixelCNN's convolutions: odd, from 3 to twice the code maps' side less one "
                            "(default 5)")
    prior.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    prior.add_argument("--samples", type=int, default=8,
                       help="images generated per configuration for the report's figures (default 8, at most "
                            "32; 0: none)")
    prior.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    prior.add_argument("--results-dir", type=Path, default=Path("results"),
                       help="where `run` exported the suite's results and weights (default results/)")
    prior.add_argument("--redraw", action="store_true",
                       help="train nothing: draw --samples images (at --temperature) from the priors stored, for "
                            "the report's figures; seeded as the stage drew them, so another temperature or count "
                            "gives other images, the same ones the same")
    prior.add_argument("--quiet", action="store_true", help="no progress bar")
    prior.set_defaults(handler=cmd_prior)


def cmd_prior(args: argparse.Namespace) -> int:
    """Each configuration's prior and CSV row are stored as it finishes; Ctrl-C says which were."""
    args.suite = suite_name(args.suite)
    if args.redraw:
        return _redraw(args)
    finished: list[str] = []
    before: list[str] = []  # the configurations of the CSV's rows before the stage
    try:
        return _prior(args, finished, before)
    except KeyboardInterrupt:
        if finished:  # prior_stage is loaded by then; before it is, importing torch again could take seconds
            from benchmark.prior_stage import prior_dir
            from benchmark.results import prior_csv_path, read_prior

            where = f"{prior_csv_path(args.results_dir, args.suite)}, {prior_dir(args.results_dir, args.suite)}"
            kept = f"the priors of {', '.join(finished)} are stored ({where}); the one in progress is lost"
            after = read_prior(args.results_dir, args.suite)
            gone = [c for c in before if after is None or c not in set(after["config_id"])]
            if gone:  # rows made with other settings (or of other weights) go with the first new row
                kept += (f", and the earlier rows of {', '.join(gone)}, made with other settings or of other weights, "
                         "are removed")
        else:
            kept = "no configuration finished, so no row of the prior CSV was written or replaced"
        others = "; to train only the others, name them with --config" if finished else ""
        print(f"interrupted: {kept}. Running the same command again trains all its configurations anew{others}",
              file=sys.stderr)
        return 130


def _prior(args: argparse.Namespace, finished: list[str], before: list[str]) -> int:
    import math

    from tqdm.auto import tqdm

    from benchmark.prior_stage import check_arguments, prior_dir, run_prior_stage
    from benchmark.results import read_prior

    earlier = read_prior(args.results_dir, args.suite)
    before.extend([] if earlier is None else earlier["config_id"])

    def show(row: dict) -> None:
        finished.append(row["config_id"])
        # tqdm.write keeps the progress bar (on stderr) intact below the finished lines.
        tqdm.write(f"{row['config_id']} (fold {row['fold']}): val NLL {row['val_nll_nats']:.4f} nats/code "
                   f"(uniform: ln K = {row['uniform_nats']:.4f}) = {row['val_bits_per_code']:.4f} bits/code "
                   f"(uniform: log2 K = {row['uniform_nats'] / math.log(2):.4f}); the training codes' frequencies "
                   f"alone: {row['frequency_nats']:.4f} nats/code; code perplexity "
                   f"{row['code_perplexity']:.1f} of K = {math.exp(row['uniform_nats']):.0f}; "
                   f"best epoch {row['best_epoch']}/{row['epochs']}, {row['n_train']} train (a tenth of them held "
                   f"out to choose the epoch) / {row['n_val']} val code maps, {row['seconds']:.1f} s", file=sys.stdout)

    if args.samples == 0 and _given(args, ("temperature",)):
        raise ValueError("--temperature is the samples' temperature: with --samples 0 none are drawn, so it would "
                         "do nothing: leave it out")
    numbers = {name: getattr(args, name) for name in PRIOR_NUMBERS}
    try:
        check_arguments(**numbers)
    except ValueError as err:  # each number named as its argument: said of the flag that gave it
        raise said_of_flags(err, PRIOR_NUMBERS) from None
    try:
        summary = run_prior_stage(args.results_dir, args.suite, args.configs, **numbers, device=args.device,
                                  show_progress=not args.quiet, on_result=show,
                                  notes=lambda note: print(f"note: {note}", file=sys.stderr))
    except ValueError as err:  # a kernel too wide for the code maps is known once they are encoded
        raise said_of_flags(err, ("kernel",)) from None
    for reason in summary.skipped:
        print(f"  skipped {reason}", file=sys.stderr)
    if summary.rows:
        print(f"results: {summary.csv}; priors in {prior_dir(args.results_dir, args.suite)}")
    return 0 if summary.rows else 1


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """The flags of ``names`` given on the command line, at any value (the default's too)."""
    flags = [f"--{name.replace('_', '-')}" for name in names]
    return [flag for flag in flags if any(arg == flag or arg.startswith(f"{flag}=") for arg in args.argv)]


def _redraw(args: argparse.Namespace) -> int:
    """``prior --redraw``: new samples from the stored priors; Ctrl-C keeps those already redrawn."""
    if given := _given(args, TRAINING_ONLY):
        raise ValueError(f"--redraw trains nothing, so {', '.join(given)} would do nothing: leave "
                         f"{'them' if len(given) > 1 else 'it'} out")
    from tqdm.auto import tqdm

    from benchmark.prior_stage import prior_dir, redraw_samples

    done: list[str] = []

    def show(row: dict) -> None:
        done.append(row["config_id"])
        tqdm.write(f"{row['config_id']} (fold {row['fold']}): {args.samples} samples at temperature "
                   f"{args.temperature:g}", file=sys.stdout)

    try:
        redraw_samples(args.results_dir, args.suite, args.configs, samples=args.samples,
                       temperature=args.temperature, device=args.device, show_progress=not args.quiet,
                       on_result=show)
    except ValueError as err:
        error = said_of_flags(err, ("samples", "temperature"))
        if done:
            error = ValueError(f"{error} (the samples of {', '.join(done)} were redrawn before it)")
        raise error from None
    except KeyboardInterrupt:
        kept = (f"the samples of {', '.join(done)} are redrawn; the others keep their earlier ones" if done else
                "no samples were redrawn: every prior keeps its earlier ones")
        print(f"interrupted: {kept}", file=sys.stderr)
        return 130
    where = "" if args.results_dir == Path("results") else f" --results-dir {shlex.quote(str(args.results_dir))}"
    print(f"samples in {prior_dir(args.results_dir, args.suite)}; `python -m benchmark report --suite {args.suite}"
          f"{where}` draws their figures")
    return 0
