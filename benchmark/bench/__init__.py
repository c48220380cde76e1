"""The throughput benchmark behind ``python -m benchmark bench``, one module per concept.

``peak``: the dense-matmul peak and FLOPs per training step; ``naive``: the naive reference
loop; ``throughput``: the models and methods benchmarked, our timed training path, the
rows, table and CSV; ``folds``: the fold ensemble against the same folds one by one.
"""

from benchmark.bench.folds import EnsembleRow, format_ensemble_table, run_ensemble_bench
from benchmark.bench.naive import naive_masks, plain_process
from benchmark.bench.peak import MatmulPeak, training_flops
from benchmark.bench.throughput import (
    ENSEMBLE_CSV,
    BenchArgumentError,
    BenchRow,
    BenchWorkerError,
    bench_configuration,
    bench_one,
    format_table,
    run_bench,
    write_csv,
    write_throughput,
)

__all__ = ["ENSEMBLE_CSV", "BenchArgumentError", "BenchRow", "BenchWorkerError", "EnsembleRow", "MatmulPeak",
           "bench_configuration", "bench_one", "format_ensemble_table", "format_table", "naive_masks", "plain_process",
           "run_bench", "run_ensemble_bench", "training_flops", "write_csv", "write_throughput"]
