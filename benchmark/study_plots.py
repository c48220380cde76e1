"""Optuna's matplotlib plots of a study (history, slice, importances, Pareto front, …) as PNG
and PDF files: for `studies plot` and for the report of a run that took a search's parameters."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmark.storage import optuna_errors_only, status_counts
from benchmark.studies import file_name, lead_objective, objective_names, suite_note, suite_of

STEADY_IMPORTANCES = 10  # complete trials below which `studies plot` says its importances are rough


def plot_study(study: optuna.Study, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Write Optuna's matplotlib plots of ``study`` as PNG and PDF, as the report's figures;
    returns (paths written, notes on skipped plots)."""
    from optuna.visualization import matplotlib as vis

    names = objective_names(study)
    multi = len(names) > 1
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # Neither pruned nor failed (diverged) trials have a final value: Optuna's history leaves them out without a word.
    unplotted = {status: n for status, n in status_counts(study.get_trials(deepcopy=False)).items()
                 if status in ("pruned", "failed") and n}
    history_note = (f"({' and '.join(f'{n} {status}' for status, n in unplotted.items())} "
                    f"trial{'s' * (sum(unplotted.values()) > 1)} not shown: no final value)") if unplotted else None
    params = sorted({p for t in complete for p in t.params})
    # Several objectives: the single-value plots show the one that picks the best trial.
    lead = lead_objective(study)
    target = {"target": (lambda t: t.values[lead]), "target_name": names[lead]} if multi else {"target_name": names[0]}
    plots: dict[str, tuple] = {}
    notes: list[str] = []
    if suite_of(study):  # a request that cannot be met: an error, not a note
        raise ValueError(f"no Optuna plots for {suite_note(study)}")
    intermediate = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    if not complete:  # pruned trials only, say: their folds' running means still show where the search went
        if not intermediate:
            return [], [f"study {study.study_name!r} has no complete trial: nothing to plot"]
        return _draw(study, {"intermediate": (vis.plot_intermediate_values, {})}, out_dir, names[lead], None,
                     [f"study {study.study_name!r} has no complete trial: only its trials' intermediate values "
                      "are plotted"])
    plots["history"] = (vis.plot_optimization_history, target)
    if intermediate:
        plots["intermediate"] = (vis.plot_intermediate_values, {})
    plots["slice"] = (vis.plot_slice, target)
    if len(complete) >= 2 and len(params) >= 2:
        plots["importances"] = (vis.plot_param_importances, target)
        if len(complete) < STEADY_IMPORTANCES:
            notes.append(f"parameter importances from {len(complete)} complete trials are rough: the random forest "
                         f"that ranks the parameters (fANOVA) needs {STEADY_IMPORTANCES} or more to say much")
    else:
        notes.append(f"parameter importances skipped: need >= 2 complete trials and >= 2 parameters "
                     f"(have {len(complete)} and {len(params)})")
    if len(params) >= 2:
        plots["contour"] = (vis.plot_contour, target)
    else:
        notes.append(f"contour skipped: needs >= 2 parameters (have {len(params)})")
    if multi:
        plots["pareto"] = (vis.plot_pareto_front, {"target_names": names})
    return _draw(study, plots, out_dir, names[lead], history_note, notes)


def _draw(study: optuna.Study, plots: dict[str, tuple], out_dir: Path, objective: str, history_note: str | None,
          notes: list[str]) -> tuple[list[Path], list[str]]:
    """Draw each of ``plots`` (name: (Optuna's plot function, its arguments)) and save it under ``out_dir``,
    the history's title followed by ``history_note``; returns (paths written, ``notes`` with one for each plot
    that could not be drawn)."""
    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np

    from benchmark.figures import save_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (plot, kwargs) in plots.items():
        # Optuna's plots switch matplotlib to its ggplot style for good: kept to their own figures,
        # or the report's figures drawn after them get grey panels, grid lines and larger fonts
        with matplotlib.rc_context():
            # Optuna marks its matplotlib backend experimental, and logs a warning for each parameter
            # that never varied; the notes say what was skipped
            with warnings.catch_warnings(), optuna_errors_only():
                warnings.simplefilter("ignore")
                try:
                    axes = plot(study, **kwargs)
                except (ValueError, RuntimeError) as err:  # e.g. importances when a parameter never varied
                    notes.append(f"{name} skipped: {str(err).strip().splitlines()[0]}")
                    continue
            figure = np.ravel(axes)[0].figure
            try:
                _legible(figure, name, objective)
                if name == "history" and history_note:
                    ax = np.ravel(axes)[0]
                    ax.set_title(f"{ax.get_title()}\n{history_note}")
                written += save_figure(figure, out_dir / name)
            finally:
                plt.close(figure)  # Optuna draws on pyplot figures, which pyplot keeps until closed
    return written, notes


def _legible(figure, plot: str, objective: str) -> None:
    """Optuna's figure ``plot`` made readable: a log axis under two decades labels 1, 2 and 5 of each
    decade as plain numbers (matplotlib's minor labels, 2×10⁻¹ 3×10⁻¹ …, run into each other), and
    the intermediate values are named as what they are: after each fold, the running mean of the
    folds' validation values, which the pruner compares."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            low, high = sorted(axis.get_view_interval())
            subs = (1.0, 2.0, 5.0) if low > 0 and high / low < 100 else (1.0,)
            axis.set_major_locator(LogLocator(base=10, subs=subs))
            axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.set_minor_formatter(NullFormatter())
        for label, axis in ((ax.get_xlabel(), ax.xaxis), (ax.get_ylabel(), ax.yaxis)):
            if label == "Trial":  # trial numbers, also on a colour bar: no 0.2 of a trial
                axis.set_major_locator(MaxNLocator(integer=True))
    panels = sum(ax.get_label() != "<colorbar>" for ax in figure.axes)
    if plot == "contour" and panels > 1:  # a panel per pair of parameters: room for each one's labels
        side = math.isqrt(panels)
        figure.set_size_inches(3.2 * side + 1.5, 2.8 * side + 0.8)
    if plot == "intermediate":
        ax = figure.axes[0]
        ax.set_title("Each trial's running mean over its folds (what the pruner compares)")
        ax.set_xlabel("fold")
        ax.set_ylabel(f"mean validation {objective} so far")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_dir(root: Path, study_name: str) -> Path:
    """``root/<study>``, with characters that cannot be in a folder name replaced."""
    return root / file_name(study_name)
