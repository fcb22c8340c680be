"""The search space of `maskds tune`: a YAML mapping of train-config keys to ranges or choices, checked up front.

    lr: {low: 1.0e-4, high: 3.0e-3, log: true}   # a float key: a range (log scale optional)
    epochs: {low: 2, high: 4}                     # an int key: an integer range (step optional)
    augment: [light, medium, strong]              # any key: a list of choices
    age_head: [bands, regression]
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from maskds.config.keys import TrainConfig, load_config
from maskds.core.errors import UserError

# Keys a trial must not choose: where its run goes and how it is run belong to `maskds tune`.
FIXED_KEYS = ("cache", "output_dir", "name", "resume", "log_with", "stop_after_epochs")


@dataclass(frozen=True)
class Param:
    """One dimension: a float or int range, or a list of choices."""
    key: str
    kind: str                     # float | int | choice
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: int = 1
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """The trial's value for this key (an Optuna `trial.suggest_*`)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=self.step, log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))


def _field_type(key: str) -> Any:
    return typing.get_type_hints(TrainConfig)[key]


def as_override(key: str, value: Any) -> str:
    """`key=value` with the value written as YAML (how train.py reads overrides)."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def _check_value(key: str, value: Any, where: str, base: tuple[str | None, list[str]]) -> None:
    """A value the base config (file and overrides) accepts for `key`, or a UserError naming it."""
    try:
        load_config(base[0], [*base[1], as_override(key, value)])
    except UserError as err:
        raise UserError(f"{where}: {key}={value!r} is not a valid value with the base config ({err})") from None


def _number(value: Any) -> float | int | None:
    """An int or float (YAML 1.1 reads 3e-4, without a dot, as a string: that counts too), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_param(key: str, spec: Any, where: str, base: tuple[str | None, list[str]] = (None, [])) -> Param:
    """One entry of the space, checked against TrainConfig's field `key` and the base (config, overrides)."""
    valid = sorted(f.name for f in dataclasses.fields(TrainConfig) if f.name not in FIXED_KEYS)
    if key not in valid:
        raise UserError(f"{where}: {key!r} is not a train config key a trial may choose; "
                        f"valid keys: {', '.join(valid)}")
    if isinstance(spec, list):
        if not spec or len({repr(v) for v in spec}) != len(spec):
            raise UserError(f"{where}: {key}: give a non-empty list of distinct choices, got {spec!r}")
        for value in spec:
            _check_value(key, value, where, base)
        return Param(key, "choice", choices=tuple(spec))
    kind = {float: "float", int: "int"}.get(_field_type(key))
    if not isinstance(spec, dict) or kind is None:
        raise UserError(f"{where}: {key}: give a list of choices" + (
            "" if kind is None else " or {low: ..., high: ..., log: true|false}") + f", got {spec!r}")
    unknown = sorted(set(spec) - {"low", "high", "log", "step"})
    if unknown or "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: {key}: a range needs low and high (and may have log, step), got {spec!r}")
    low, high, log = _number(spec["low"]), _number(spec["high"]), bool(spec.get("log", False))
    if low is None or high is None or not low < high:
        raise UserError(f"{where}: {key}: the range [{low}, {high}] is empty; low must be below high")
    if log and low <= 0:
        raise UserError(f"{where}: {key}: a log range needs low > 0, got {low}")
    step = spec.get("step", 1)
    if kind == "float" and "step" in spec:
        raise UserError(f"{where}: {key}: step is for integer keys; a float range is continuous")
    if not isinstance(step, int) or step < 1 or (log and step != 1):
        raise UserError(f"{where}: {key}: step must be a whole number >= 1, and 1 on a log range, got {step!r}")
    if kind == "int" and (int(low) != low or int(high) != high):
        raise UserError(f"{where}: {key} is an integer key; give integer low and high, got {low} and {high}")
    for value in (low, high):
        _check_value(key, int(value) if kind == "int" else float(value), where, base)
    return Param(key, kind, float(low), float(high), log, step)


def load_space(path: str | Path, config: str | None = None, overrides: list[str] | None = None) -> list[Param]:
    """The checked search space of a YAML file (see the module's docstring); every value is checked
    with the base config file and overrides the trials share."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--space {p} does not exist; write a YAML mapping such as "
                        "`lr: {low: 1.0e-4, high: 3.0e-3, log: true}`")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"--space {p} is not valid YAML: {err}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"--space {p} must be a non-empty mapping of train config keys to ranges or choices")
    return [parse_param(str(k), v, str(p), (config, list(overrides or []))) for k, v in data.items()]


def describe(space: list[Param]) -> str:
    """A stable text of the space, stored with the study so a resume cannot silently change it."""
    return yaml.safe_dump([dataclasses.asdict(p) | {"choices": list(p.choices)} for p in space], sort_keys=True)
