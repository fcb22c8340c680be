"""What a `maskds tune` study keeps across resumes: one search space and one base config (what the user set),
checked when a process joins the study (`job`: tune's TuneJob: config, overrides, space, study)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from maskds.config.keys import TrainConfig, load_config, parse_overrides
from maskds.core.errors import UserError
from maskds.tuning.space import describe


def user_set(job, config: dict) -> dict:
    """What the user set: the --config file's keys and the overrides, at the values `config` (the loaded one)
    gives them, so `lr: 1e-3` and `lr=0.001` are one value."""
    keys = set(parse_overrides(job.overrides))
    if job.config is not None:  # load_config has checked it is a YAML mapping
        keys |= set(yaml.safe_load(Path(job.config).read_text()) or {})
    return {k: config[k] for k in sorted(keys)}


def base_changes(held: dict, keys: set[str], now: dict) -> list[str]:
    """`key: then in the study, now` for each of `keys` whose value differs between the study's `held` values
    and the config `now`; a key the study does not hold had its default then (a field added since had none:
    its default is what the code did before it). All plain JSON values."""
    defaults = json.loads(json.dumps(TrainConfig().to_dict()))
    changes = []
    for k in sorted(keys):
        then, value = held.get(k, defaults.get(k)), now.get(k, "no longer a config key")
        if then != value:
            changes.append(f"{k}: {json.dumps(then)} in the study, {json.dumps(value)} now")
    return changes


def check_study(study, job) -> None:
    """A study keeps one space and base config: a resume with others would mix incomparable trials. The base
    config is what the user set (`user_set`: by value, the file may move, not change), so a config field added
    since, at its default, resumes; a study started before this held the whole config (`base`): its values are
    compared on the keys the user sets now."""
    space, held = describe(job.space), study.user_attrs.get("space")
    if held is None:
        study.set_user_attr("space", space)
    elif held != space:
        raise UserError(f"study {job.study!r} was started with another search space; use the same --space, "
                        "or another --study name")
    now = json.loads(json.dumps(load_config(job.config, job.overrides).to_dict()))  # plain, as stored
    mine = user_set(job, now)
    if "user_set" in study.user_attrs:
        held = json.loads(study.user_attrs["user_set"])
        changes = base_changes(held, set(held) | set(mine), now)
    elif "base" in study.user_attrs:  # the whole config, as studies stored it before
        changes = base_changes(json.loads(study.user_attrs["base"]), set(mine), now)
    else:
        study.set_user_attr("user_set", json.dumps(mine, sort_keys=True))
        return
    if changes:
        raise UserError(f"study {job.study!r} was started with another base config (--config file's values and "
                        f"overrides): {'; '.join(changes)}; use the same --config contents and overrides, or "
                        "another --study name")
