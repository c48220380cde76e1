"""What a search tunes and how it is described: the searched parameters, their ranges, the objectives,
and a search's settings (stored in its study), with the configuration a trial's parameters give.

Searched parameters, default ranges all log-uniform (``--range NAME=LOW:HIGH[:log|linear]``):
``exponent`` (single decoder) 1…100 (the thesis tried 20–60); ``w1``, ``w2`` (multidecoder)
0.1…10; ``beta`` (every method) 0.1…10 as a Gaussian VAE's KL weight, 0.025…2.5 as a VQ-VAE's
commitment weight (centred on the paper's 0.25); ``softadapt_beta`` (with ``--softadapt``,
instead of the weights) 1e-5…1e-1.

With SoftAdapt the training weights come from SoftAdapt, so W1 and W2 stay at their defaults
(they still define the validation total that picks the best epoch) and its β is searched instead.
β sits inside the latent term that SoftAdapt weighs (β·KL, or a VQ-VAE's commitment weight), so
it still shapes training: it is searched too when given a range (``--range beta=LOW:HIGH``).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from benchmark.balancing import BalanceConfig
from benchmark.checks import check_choice, did_you_mean, field_problems, flagged, problems_of, raise_problems
from benchmark.conditioning import SAMPLINGS
from benchmark.config import TRAIN_CHECKS, Configuration, MethodConfig, TrainConfig, check_dataset_name
from benchmark.models import FAMILIES, METHODS, model_config
from benchmark.suites import SPLIT_CHECKS, split_problems

OBJECTIVES = ("recon", "latent", "recon_cond")


@dataclass(frozen=True)
class ParamRange:
    """Where Optuna samples one parameter: [low, high], log-uniform or uniform."""

    low: float
    high: float
    log: bool = True

    def check(self, name: str) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"range for {name} must have finite bounds, got {self.low:g}:{self.high:g}")
        if self.low >= self.high:
            raise ValueError(f"empty range for {name}: {self.low:g}:{self.high:g} (low must be < high)")
        positive = self.log or name in ("exponent", "softadapt_beta")  # log scale, or power(a) needs a > 0
        if self.low < 0 or (positive and self.low == 0):
            raise ValueError(f"range for {name} must be {'> 0' if positive else '>= 0'}"
                             f"{' on a log scale' if self.log else ''}, got {self.low:g}:{self.high:g}")

    def text(self) -> str:
        """As ``--range`` takes it, exactly (a rounded range would be another search's)."""
        return f"{self.low!r}:{self.high!r}:{'log' if self.log else 'linear'}"


DEFAULT_RANGES = {"exponent": ParamRange(1.0, 100.0), "w1": ParamRange(0.1, 10.0), "w2": ParamRange(0.1, 10.0),
                  "beta": ParamRange(0.1, 10.0), "softadapt_beta": ParamRange(1e-5, 1e-1)}
# A VQ-VAE's β weighs the commitment term: two decades around the paper's 0.25, which takes in the
# 0.1…2 over which the paper found results robust.
VQ_BETA_RANGE = ParamRange(0.025, 2.5)


def default_range(name: str, family: str) -> ParamRange:
    return VQ_BETA_RANGE if (name, family) == ("beta", "vq-vae") else DEFAULT_RANGES[name]


def searched_parameters(method: str, softadapt: bool, ranges: Iterable[str] = ()) -> tuple[str, ...]:
    """The parameters a search of ``method`` tunes, given a range for those in ``ranges`` (see the
    module docstring)."""
    names = ("exponent",) if method == "single" else ()
    if softadapt:
        return (*names, "softadapt_beta", *(("beta",) if "beta" in ranges else ()))
    return (*names, *(("w1", "w2") if method == "multidecoder" else ()), "beta")


def parse_range(text: str) -> tuple[str, ParamRange]:
    """``NAME=LOW:HIGH[:log|linear]`` → (name, range); the scale defaults to log."""
    name, sep, spec = text.partition("=")
    parts = spec.split(":")
    if not sep or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("log", "linear")):
        raise ValueError(f"bad range {text!r}; write NAME=LOW:HIGH or NAME=LOW:HIGH:log|linear, e.g. exponent=10:60")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"bad range {text!r}: LOW and HIGH must be numbers") from None
    return name.strip(), ParamRange(low, high, log=len(parts) == 2 or parts[2] == "log")


def describe_ranges(ranges: dict[str, ParamRange]) -> str:
    """``NAME=LOW:HIGH:SCALE, ...`` as ``--range`` takes them, so that a shown range can be pasted back."""
    return ", ".join(f"{name}={r.text()}" for name, r in ranges.items())


@dataclass(frozen=True)
class SearchSettings:
    """What one search tunes and on which data; stored in the study, must match on resume."""

    family: str
    config: int
    method: str
    sampling: str | None = None
    softadapt: bool = False
    dataset: str = "mnist5k"
    limit: int | None = None
    epochs: int = 100
    folds: int = 5
    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    precision: str = "auto"  # as TrainConfig: bf16 autocast on an Ampere or later GPU, or fp32 / bf16 everywhere
    objectives: tuple[str, ...] = ("recon",)
    ranges: dict[str, ParamRange] = field(default_factory=dict)  # filled with the defaults

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        raise_problems(self._problems())
        object.__setattr__(self, "ranges", self._filled_ranges())

    def _filled_ranges(self) -> dict[str, ParamRange]:
        """The range of every searched parameter: the one given, else its default."""
        wanted = searched_parameters(self.method, self.softadapt, self.ranges)
        return {name: self.ranges.get(name, default_range(name, self.family)) for name in wanted}

    def _problems(self) -> list[str]:
        """Every problem of these settings that no other hides, each said of its flag where its value alone
        brings it: what is tuned, the objectives, then the data and training. A check that needs a value found
        bad is left out: the searched parameters depend on the method, the sampler at the ranges' middles on
        all that is tuned."""
        # a config is known only of a known family
        model = [flagged(message, "config" if self.family in FAMILIES else "family")
                 for message in problems_of(model_config, self.family, self.config)]
        method = [flagged(message, "method") for message in problems_of(check_choice, "method", self.method, METHODS)]
        ranges = [] if method else [flagged(message, "range") for message in self._range_problems()]
        if self.sampling is not None:
            sampling = [flagged(message, "sampling")
                        for message in problems_of(check_choice, "sampling", self.sampling, SAMPLINGS)]
        else:  # its message names the samplings that this method accepts
            sampling = [] if method or self.method == "baseline" else [
                f"{message} (give it with --sampling)" for message in problems_of(MethodConfig, self.method)]
        tuned = model + method + ranges + sampling
        if not tuned:  # family, config, method and sampling together, at the middle of every range
            middle = {name: math.sqrt(r.low * r.high) if r.log else (r.low + r.high) / 2
                      for name, r in self._filled_ranges().items()}
            tuned = problems_of(lambda: configuration_for(self, middle).method.sampler(32))
        objectives = []
        if not self.objectives or len(set(self.objectives)) != len(self.objectives) or \
                not set(self.objectives) <= set(OBJECTIVES):
            objectives.append(flagged(f"bad objectives {','.join(self.objectives)!r}; give one or more of "
                                      f"{', '.join(OBJECTIVES)}, comma-separated and each once, e.g. recon,latent",
                                      "objectives"))
        elif not method and "recon_cond" in self.objectives and self.method == "baseline":
            objectives.append("the baseline has no conditioned decoder: recon_cond cannot be an objective")
        data, bad = field_problems(self, {
            "dataset": (str, "a name", lambda v: problems_of(check_dataset_name, v)),
            **SPLIT_CHECKS,
            **{key: TRAIN_CHECKS[key] for key in ("epochs", "batch_size", "lr", "weight_decay", "precision")},
        }, flag=True)
        if not bad & {"limit", "folds"}:
            data += split_problems(self.limit, self.folds)
        return tuned + objectives + data

    def _range_problems(self) -> list[str]:
        """The problems of the ranges given: of a parameter that this search does not tune, of a bad range."""
        wanted = searched_parameters(self.method, self.softadapt, self.ranges)
        unknown = sorted(set(self.ranges) - set(wanted))
        problems = []
        if unknown:
            also = " (and beta, given its range)" if self.softadapt and "beta" not in wanted else ""
            problems.append(f"no parameter {unknown[0]!r}{did_you_mean(unknown[0], wanted)} in this search; it "
                            f"tunes: {', '.join(wanted)}{also}")
        return problems + [message for name, value in self._filled_ranges().items()
                           for message in problems_of(value.check, name)]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def tuned(self) -> str:
        """The configurations this search tunes, by the parts of their ids that it fixes: family,
        config, method, sampling and SoftAdapt, e.g. ``vq-vae/1/single/gaussian/softadapt``."""
        return "/".join(self._tuned_parts())

    def _tuned_parts(self) -> list[str]:
        return [p for p in (self.family, str(self.config), self.method, self.sampling,
                            "softadapt" if self.softadapt else None) if p]

    def default_study_name(self) -> str:
        """A readable name, e.g. ``search-vq-vae-1-single-gaussian``."""
        objectives = "-".join(self.objectives) if self.objectives != ("recon",) else None
        return "-".join(p for p in ("search", *self._tuned_parts(), objectives) if p)

    def command(self, study_name: str) -> str:
        """The `search` command that makes study ``study_name`` with these settings, or continues it: the
        options at `search`'s defaults (these fields' own) left out, and --precision too ("auto" takes the study's)."""
        args = ["--family", self.family, "--config", str(self.config), "--method", self.method]
        for setting in fields(self):
            value = getattr(self, setting.name)
            if setting.name in ("family", "config", "method", "precision", "ranges") or value == setting.default:
                continue
            if setting.name == "softadapt":
                args.append("--softadapt")
            else:
                args += [f"--{setting.name.replace('_', '-')}",
                         ",".join(value) if setting.name == "objectives" else str(value)]
        # A range is left out only where the search tunes its parameter without one (not SoftAdapt's β).
        untold = searched_parameters(self.method, self.softadapt)
        args += [arg for name, given in self.ranges.items()
                 if name not in untold or given != default_range(name, self.family)
                 for arg in ("--range", f"{name}={given.text()}")]
        if study_name != self.default_study_name():
            args += ["--study-name", study_name]
        return "python -m benchmark search " + shlex.join(args)

    def train_config(self, device: str = "auto") -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, device=device, precision=self.precision)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in the study's ``settings`` user attribute."""
        data = asdict(self)
        data["objectives"] = list(self.objectives)
        data["ranges"] = {name: asdict(r) for name, r in self.ranges.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSettings:
        values = dict(data)
        values.pop("metrics_version", None)
        values["ranges"] = {name: ParamRange(**r) for name, r in data.get("ranges", {}).items()}
        values["objectives"] = tuple(data.get("objectives", ("recon",)))
        return cls(**values)


def configuration_for(settings: SearchSettings, params: dict[str, float]) -> Configuration:
    """The configuration that a trial with ``params`` trains."""
    weights = {name: float(params[name]) for name in ("w1", "w2", "beta", "softadapt_beta") if name in params}
    balance = BalanceConfig(softadapt=settings.softadapt, **weights)
    exponent = float(params["exponent"]) if "exponent" in params else None
    method = MethodConfig(settings.method, settings.sampling, exponent=exponent, balance=balance)
    return Configuration(settings.family, settings.config, method)
