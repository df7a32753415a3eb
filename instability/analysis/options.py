"""Check the analysis options (conf/analyze.yaml) before any record is read: each problem names its option."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from instability.analysis.loading import AnalysisError
from instability.analysis.setting_measures import HEADLINE
from instability.measures.functional.prediction import KAPPA_CHANCE
from instability.records import CHECKPOINTS

Check = tuple[Callable[[Any], bool], str]


def _whole(low: int) -> Check:
    return (lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= low), f"a whole number >= {low}"


def _optional(check: Check) -> Check:
    test, text = check
    return (lambda x: x is None or test(x)), f"null or {text}"


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


FLAG: Check = (lambda x: isinstance(x, bool), "true or false")
OPEN_UNIT: Check = (lambda x: _number(x) and 0 < x < 1, "a number between 0 and 1 (both excluded)")
FRACTIONS: Check = (lambda x: isinstance(x, list) and bool(x) and all(_number(f) and 0 < f <= 1 for f in x),
                    "a non-empty list of fractions in (0, 1]")
KEYS: Check = (lambda x: isinstance(x, list) and all(isinstance(k, str) and k for k in x),
               "a list of setting keys or aliases (task, model, lr, ...)")
BOOT_MEASURES: Check = (lambda x: isinstance(x, list) and len(x) >= 2 and len(set(x)) == len(x)
                        and all(m in HEADLINE for m in x), f"a list of 2 or more distinct measures of {list(HEADLINE)}")

CHECKS: dict[str, Check] = {
    "overwrite": FLAG,
    "checkpoint": ((lambda x: x is None or x in CHECKPOINTS), f"null or one of {list(CHECKPOINTS)}"),
    "include_stopped": FLAG,
    "min_runs": _whole(2),
    "seed": _whole(0),
    "memory.max_gib": _optional(((lambda x: _number(x) and x > 0), "a positive number of GiB")),
    "measures.cka_debiased": FLAG,
    "measures.kappa_chance": ((lambda x: x in KAPPA_CHANCE), f"one of {list(KAPPA_CHANCE)}"),
    "measures.workers": _optional(_whole(1)),
    "layer_trend": FLAG,
    "failed_runs.enabled": FLAG,
    "failed_runs.min_per_group": _whole(1),
    "failed_runs.permutations": _whole(1),
    "failed_runs.alpha": OPEN_UNIT,
    "subsampling.enabled": FLAG,
    "subsampling.fractions": FRACTIONS,
    "subsampling.draws": _whole(1),
    "bootstrap.enabled": FLAG,
    "bootstrap.replicates": _whole(3),
    "bootstrap.keep_self_pairs": FLAG,
    "bootstrap.confidence": OPEN_UNIT,
    "bootstrap.measures": BOOT_MEASURES,
    "bootstrap.seeds_below": _optional(_whole(2)),
    "sd_vs_agreement.enabled": FLAG,
    "sd_vs_agreement.group_by": KEYS,
    "sd_vs_agreement.same_lr_as_standard": FLAG,
    "sd_vs_agreement.sd_seeds_below": _optional(_whole(2)),
    "benchmark.enabled": FLAG,
    "benchmark.group_by": KEYS,
    "figures": FLAG,
}


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def validate(config: dict[str, Any]) -> None:
    """`AnalysisError` listing every option with a value it cannot take, as `option=value: expected ...`."""
    problems = []
    for option, (test, expected) in CHECKS.items():
        try:
            given = _lookup(config, option)
        except KeyError:
            problems.append(f"{option} is missing (conf/analyze.yaml has it)")
            continue
        if not test(given):
            problems.append(f"{option}={given!r}: expected {expected}")
    if problems:
        raise AnalysisError("invalid analysis option(s): " + "; ".join(problems))
