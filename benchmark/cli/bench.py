"""`bench`: training throughput of our training path against a naive loop and the matmul peak."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.checks import said_of_flags
from benchmark.config import PRECISIONS
from benchmark.files import check_folder
from benchmark.processes import busy_note

BENCH_EPILOG = """\
ours   = benchmark.train.train_fold (one untimed warm-up call, then one timed epoch of --steps batches;
         its per-fold fixed costs, a 32-image validation pass included, are in the timing)
naive  = the same model and AdamW(lr=1e-3) in the plainest loop: DataLoader(TensorDataset, shuffle=True),
         masks built per image in Python/numpy, loss.item() every step, default layers and layouts,
         in a fresh process of its own (none of our CPU process settings)
FLOPs  = FlopCounterMode over one forward+backward step / batch (convolutions and matmuls)
% peak = achieved FLOP/s of ours / the best float32 dense-product rate measured in the same run
         (torch.mm, a 1x1 and a 3x3 convolution)
--ensemble N: N folds of --steps batches each, trained one by one with train_fold and then stacked
         with train_folds_together (torch.func.vmap); speed-up = one-by-one seconds / stacked seconds

examples:
  python -m benchmark bench                                  # every family x config x method
  python -m benchmark bench --families vae vq-vae:1 --methods baseline --steps 10
  python -m benchmark bench --device cuda --ensemble 5       # with the five-fold ensemble's speed-up
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="training throughput (images/s, FLOP/s, %% of matmul peak) vs a naive loop",
                           description="Train each model family/config and method for a fixed number of steps on "
                                       "a dataset and report images/s of our training path, of a naive reference "
                                       "loop, FLOPs per image and the fraction of the measured matmul peak. "
                                       "Writes OUT/throughput.csv and removes an OUT/ensemble.csv of an earlier "
                                       "run (--ensemble writes a new one). Ctrl-C keeps no partial timings.",
                           epilog=BENCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--families", nargs="+", metavar="FAMILY[:CONFIG]",
                       help="vae | vq-vae, optionally with a config, e.g. vq-vae:2 (default: every config)")
    bench.add_argument("--methods", nargs="+", metavar="METHOD",
                       help="baseline | multidecoder | single (default: all three)")
    bench.add_argument("--steps", type=int, default=20, help="timed training steps per run (default 20)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps before each run (default 3)")
    bench.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    bench.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: CUDA when present)")
    bench.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="our training path's autocast: auto = bf16 on an Ampere or later GPU (default); the naive loop "
                            "stays float32")
    bench.add_argument("--workers", type=int, default=1,
                       help="CPU: time ours as this many processes training at once, the cores split among "
                            "them, as `run --workers` (default 1); the naive loop and --ensemble stay one process")
    bench.add_argument("--dataset", default="mnist5k", help="dataset to train on (default mnist5k)")
    bench.add_argument("--data-root", help="folder holding torchvision datasets (mnist, cifar10, celeba)")
    bench.add_argument("--download", action="store_true", help="download mnist/cifar10/celeba into --data-root")
    bench.add_argument("--repeats", type=int, default=1,
                       help="time ours and naive (with --ensemble, the folds one by one and stacked) this many "
                            "times, alternating, and keep the best (default 1)")
    bench.add_argument("--peak-size", type=int, help="side of the square matmul for the peak (default 2048 on "
                                                     "CPU, 8192 on CUDA)")
    bench.add_argument("--seed", type=int, default=0, help="seed of the models' initial weights and of training "
                                                         "(default 0; the figures hardly depend on it)")
    bench.add_argument("--no-naive", action="store_true", help="skip the naive reference loop")
    bench.add_argument("--ensemble", type=int, metavar="FOLDS",
                       help="also time FOLDS folds trained one by one against the same folds stacked as one "
                            "vectorised ensemble (what `run --fold-parallel` does); writes OUT/ensemble.csv")
    bench.add_argument("--out", type=Path, default=Path("reports/bench"),
                       help="folder for throughput.csv and ensemble.csv (default reports/bench)")
    bench.add_argument("--quiet", action="store_true", help="no progress lines")
    bench.set_defaults(handler=cmd_bench)


# ``run_bench``'s numbers, each given by the flag of its name
FLAGGED_NUMBERS = ("steps", "warmup", "batch", "repeats", "workers", "seed", "peak_size")


def cmd_bench(args: argparse.Namespace) -> int:
    """Nothing is stored until a stage finishes: Ctrl-C says which files (if any) this run wrote."""
    written: list[Path] = []
    try:
        return _bench(args, written)
    except KeyboardInterrupt:
        if not written:
            kept = f"nothing was written to {args.out}"
        elif args.ensemble:
            kept = f"{written[0]} was written; the ensemble timing was not, so there is no ensemble.csv"
        else:
            kept = f"{written[0]} was written"
        print(f"interrupted: {kept}; bench keeps no partial timings, so a rerun measures everything again",
              file=sys.stderr)
        return 130


def _bench(args: argparse.Namespace, written: list[Path]) -> int:
    from benchmark.bench import (
        ENSEMBLE_CSV,
        BenchArgumentError,
        format_ensemble_table,
        format_table,
        run_bench,
        run_ensemble_bench,
        write_csv,
        write_throughput,
    )
    from benchmark.config import TrainConfig
    from benchmark.data import unused_source_note
    from benchmark.ensemble import stacking_problem
    from benchmark.train import training_device

    if args.ensemble is not None and args.ensemble < 2:  # before the long main benchmark, not after it
        raise ValueError(f"--ensemble needs at least 2 folds, got {args.ensemble}")
    if args.ensemble:
        settings = TrainConfig(device=args.device, precision=args.precision)
        problem = stacking_problem(settings, training_device(settings))  # bf16 without kernels: that error first
        if problem:
            raise ValueError(f"{problem}; leave out --ensemble, or use --precision fp32")
    # A folder that cannot be written fails now, not after the timings (made once they are done).
    check_folder("--out", args.out)
    if note := unused_source_note(args.dataset, args.data_root, args.download):
        _stderr(note)
    progress = None if args.quiet else _stderr
    try:
        result = run_bench(families=args.families, methods=args.methods, steps=args.steps, warmup=args.warmup,
                           batch=args.batch, device=args.device, dataset=args.dataset, naive=not args.no_naive,
                           seed=args.seed, repeats=args.repeats, peak_size=args.peak_size, precision=args.precision,
                           workers=args.workers, data_root=args.data_root, download=args.download,
                           progress=progress, notes=_stderr)
    except BenchArgumentError as err:  # a number the library names as its argument: said of the flag that gave it
        raise said_of_flags(err, FLAGGED_NUMBERS) from None
    print(format_table(result))
    if note := busy_note("bench timed", "its figures are low and its speed-ups unsteady; rerun it on an idle machine"):
        _stderr(note)
    path, stale = write_throughput(result.rows, args.out, result.settings)
    written.append(path)
    print(f"wrote {path}" + (f" (removed {stale} of an earlier run)" if stale else ""))
    if args.ensemble:
        rows = run_ensemble_bench(families=args.families, methods=args.methods, folds=args.ensemble,
                                  steps=args.steps, warmup=args.warmup, batch=args.batch, device=args.device,
                                  dataset=args.dataset, seed=args.seed, precision=args.precision,
                                  data_root=args.data_root, repeats=args.repeats,
                                  progress=progress)  # downloaded by now
        print()
        print(format_ensemble_table(rows))
        if any(row.speedup > row.folds for row in rows):  # stacking N folds saves at most N-fold
            _stderr(f"warning: a speed-up above the number of folds is timing noise, not stacking: "
                    f"{'rerun with --repeats 3' if args.repeats < 3 else 'rerun'} on an idle machine")
        if note := busy_note("the ensemble was timed", "its speed-ups are unsteady; rerun it on an idle machine"):
            _stderr(note)
        ensemble_settings = {**result.settings, "naive_precision": None}  # no naive loop there
        print(f"wrote {write_csv(rows, args.out / ENSEMBLE_CSV, ensemble_settings)}")
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
