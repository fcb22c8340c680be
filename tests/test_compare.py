"""`maskds compare`: known verdicts on synthetic submissions and out-of-fold runs, each bad input as exit 2,
and the same numbers as the devbench's compare.py."""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from maskds.core.errors import UserError
from maskds.evaluation.bootstrap import boot_f1, macro_f1, person_weights, seed_difference, verdict
from maskds.evaluation.compare import add_parser

DEVBENCH = Path(__file__).resolve().parents[2] / "shared" / "devbench" / "compare.py"
PERSONS = 60  # 10 persons of each gender x age band, 7 images each (5 worn, 1 incorrect, 1 not worn)
MASKS = (0, 0, 0, 0, 0, 1, 2)
IMAGES = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")


def cli(*argv) -> int:
    """What maskds.cli.main.main does with the subcommand: parse, run, a UserError is exit 2 with its message."""
    parser = argparse.ArgumentParser(prog="maskds")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    try:
        return args.func(args)
    except UserError as err:
        print(f"maskds {args.command}: error: {err}", file=sys.stderr)
        return 2


def truth_table() -> pd.DataFrame:
    rows = []
    for p in range(PERSONS):
        gender, band = (p // 3) % 2, p % 3
        for m, name in zip(MASKS, IMAGES):
            rows.append({"ImageID": f"{p:04d}_{name}.jpg", "ans": m * 6 + gender * 3 + band,
                         "person": f"{p:06d}", "image_name": name})
    return pd.DataFrame(rows)


def noisy(truth: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """The truth with a share `rate` of the images given another class (an age band or gender off)."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(truth)) < rate
    return np.where(wrong, (truth + rng.integers(1, 3, len(truth))) % 18, truth)


@pytest.fixture
def bench(tmp_path):
    """answers.csv and three seeds of a poor recipe (40% wrong) and of a good one (5% wrong)."""
    table = truth_table()
    table[["ImageID", "ans", "person"]].to_csv(tmp_path / "answers.csv", index=False)
    truth = table["ans"].to_numpy()
    paths = {}
    for name, rate in (("poor", 0.4), ("good", 0.05)):
        for s in range(3):
            path = tmp_path / f"{name}{s}.csv"
            # infer.py's submission lists the images in its own order: compare aligns by ImageID
            sub = pd.DataFrame({"ImageID": table["ImageID"], "ans": noisy(truth, rate, 100 * s + len(name))})
            sub.iloc[::-1].to_csv(path, index=False)
            paths.setdefault(name, []).append(path)
    return tmp_path / "answers.csv", paths


def run_json(capsys, *argv) -> dict:
    assert cli("compare", *argv, "--json", "--draws", 300) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_the_better_recipe_is_better_and_the_mirror_is_worse(bench, capsys):
    answers, subs = bench
    res = run_json(capsys, "--a", *subs["poor"], "--b", *subs["good"], "--answers", answers)
    assert res["verdict"] == "B is better"
    assert res["interval"][0] > 0 and res["diff"] > 0.2 and res["paired"] and res["pairs"] == 3
    assert abs(res["seed_diff"]) >= 2 * res["paired_se"]
    assert len(res["a_scores"]) == len(res["b_scores"]) == 3 and res["a_mean"] < res["b_mean"]
    assert res["persons"] == PERSONS and res["images"] == PERSONS * 7
    for head in ("mask", "gender", "age"):
        h = res["heads"][head]
        assert h["b"] > h["a"] and h["diff"] == pytest.approx(h["b"] - h["a"])
    mirror = run_json(capsys, "--a", *subs["good"], "--b", *subs["poor"], "--answers", answers)
    assert mirror["verdict"] == "B is worse" and mirror["interval"][1] < 0
    assert mirror["diff"] == pytest.approx(-res["diff"])


def test_the_same_or_nearly_the_same_predictions_show_no_difference(bench, tmp_path, capsys):
    answers, subs = bench
    same = run_json(capsys, "--a", *subs["poor"], "--b", *subs["poor"], "--answers", answers)
    assert same["verdict"] == "no difference shown" and same["interval"] == [0.0, 0.0] and same["diff"] == 0
    # B fixes one wrong image of one person in every run: never worse, but no better when that person is
    # not drawn (over a third of the draws), so the interval starts at 0
    table, nearly = truth_table(), []
    for s, path in enumerate(subs["poor"]):
        sub = pd.read_csv(path, dtype={"ImageID": str}).set_index("ImageID").loc[table["ImageID"]]
        wrong = np.flatnonzero(sub["ans"].to_numpy() != table["ans"].to_numpy())[0]
        sub.iloc[wrong, 0] = table["ans"].iloc[wrong]
        nearly.append(tmp_path / f"nearly{s}.csv")
        sub.reset_index().to_csv(nearly[-1], index=False)
    res = run_json(capsys, "--a", *subs["poor"], "--b", *nearly, "--answers", answers)
    assert res["verdict"] == "no difference shown" and res["diff"] > 0 and res["interval"][0] == 0


def test_the_tables_show_every_run_the_heads_and_the_verdict(bench, capsys):
    answers, subs = bench
    assert cli("compare", "--a", subs["poor"][0], "--b", subs["good"][0], "--answers", answers,
               "--draws", 100) == 0
    out = capsys.readouterr().out
    for text in ("mean of 1", "gender", "95% interval over eval persons", "verdict: B is better",
                 "three seeds a side"):
        assert text in out


def test_the_verdict_needs_the_seeds_to_agree():
    # each pair's interval may lie above 0, but seed by seed B won, lost and won: 0.0233 < 2 x SE
    seeds = seed_difference([0.50, 0.55, 0.52], [0.56, 0.51, 0.57])
    assert seeds["paired"] and not seeds["seeds_ok"]
    assert verdict(0.01, 0.05, seeds["seeds_ok"]) == "no difference shown"
    assert verdict(0.01, 0.05, True) == "B is better" and verdict(-0.05, -0.01, True) == "B is worse"
    unpaired = seed_difference([0.50, 0.51, 0.50], [0.60, 0.61])
    assert not unpaired["paired"] and unpaired["seeds_ok"]
    assert unpaired["seed_diff"] == pytest.approx(0.605 - 1.51 / 3)
    # one run against three: B's runs spread (sd 0.056, lent to A's one run), so +0.05 is under 2 x SE
    # (0.129) and blocks the verdict, where the devbench's zip would pair one seed and not check
    lone = seed_difference([0.50], [0.49, 0.60, 0.56])
    assert not lone["paired"] and not lone["seeds_ok"]
    assert lone["paired_se"] == pytest.approx(np.sqrt(0.0031 / 1 + 0.0031 / 3))


def test_macro_f1_is_sklearns_and_the_bootstrap_weights_images_by_person():
    rng = np.random.default_rng(3)
    truth, pred = rng.integers(0, 12, 200), rng.integers(0, 14, 200)
    assert macro_f1(truth, pred) == pytest.approx(f1_score(truth, pred, average="macro", zero_division=0))
    person = np.repeat(np.arange(40), 5)
    weights = person_weights(40, 3, seed=7)
    for w, f in zip(weights, boot_f1(truth, pred, person, weights)):
        keep = np.repeat(np.arange(200), w[person].astype(int))  # each image as often as its person was drawn
        expected = f1_score(truth[keep], pred[keep], average="macro", labels=np.union1d(truth, pred),
                            zero_division=0)
        assert f == pytest.approx(expected)


@pytest.mark.parametrize("case", ["extra_image", "no_person", "empty_side", "no_answers", "run_folder"])
def test_bad_submission_inputs_exit_2_with_the_reason(bench, tmp_path, capsys, case):
    answers, subs = bench
    a, b, extra = subs["poor"], subs["good"], ["--answers", answers]
    if case == "extra_image":  # the answers miss an image the submissions predict
        table = pd.read_csv(answers, dtype=str)
        table[table["ImageID"] != "0007_mask3.jpg"].to_csv(answers, index=False)
        expect = "0007_mask3.jpg"
    elif case == "no_person":
        pd.read_csv(answers, dtype=str).drop(columns="person").to_csv(answers, index=False)
        expect = "no person column"
    elif case == "empty_side":
        b, expect = [], "side B (--b) has no submissions"
    elif case == "run_folder":  # a run folder with --answers: it exists, it is just not a submission
        (tmp_path / "runs" / "x").mkdir(parents=True)
        a, expect = [tmp_path / "runs" / "x"], "runs (runs/NAME) are compared without --answers"
    else:
        extra, expect = [], "submissions need --answers"
    assert cli("compare", "--a", *a, "--b", *b, *extra) == 2
    assert expect in capsys.readouterr().err


def write_run(root: Path, name: str, pred: np.ndarray, persons=None) -> Path:
    """A run folder with fold0/oof.csv in the columns training writes (probabilities peaked on `pred`)."""
    from maskds.core.probabilities import PROB_COLUMNS

    table = truth_table()
    if persons is not None:
        keep = table["person"].isin([f"{p:06d}" for p in persons]).to_numpy()
        table, pred = table[keep], pred[keep]
    n = len(table)
    frame = pd.DataFrame({"fold": 0, "row": np.arange(n), "person_id": table["person"].to_numpy(),
                          "image_name": table["image_name"].to_numpy(), "path": table["ImageID"].to_numpy(),
                          "mask": 0, "gender": 0, "age": 30, "truth": table["ans"].to_numpy(),
                          "cache_id": "0123456789abcdef", "pred": pred})
    for col in PROB_COLUMNS:
        frame[col] = 0.01
    frame[[f"class_p{i}" for i in range(18)]] = np.where(np.arange(18) == pred[:, None], 0.83, 0.01)
    fold = root / name / "fold0"
    fold.mkdir(parents=True)
    frame.sample(frac=1.0, random_state=0).to_csv(fold / "oof.csv", index=False)  # rows in any order
    return root / name


def test_runs_out_of_fold_rows_give_the_known_verdict(tmp_path, capsys):
    truth = truth_table()["ans"].to_numpy()
    a = [write_run(tmp_path, f"a{s}", noisy(truth, 0.4, s)) for s in range(3)]
    b = [write_run(tmp_path, f"b{s}", noisy(truth, 0.05, 10 + s)) for s in range(3)]
    res = run_json(capsys, "--a", *a, "--b", *b)
    assert res["verdict"] == "B is better" and res["what"] == "out-of-fold" and res["persons"] == PERSONS
    assert res["a_scores"][0] == pytest.approx(f1_score(truth, noisy(truth, 0.4, 0), average="macro"))
    ages = [f1_score(truth % 3, noisy(truth, 0.4, s) % 3, average="macro") for s in range(3)]
    assert res["heads"]["age"]["a"] == pytest.approx(np.mean(ages))  # per head: the mean of each run's
    assert run_json(capsys, "--a", *b, "--b", *a)["verdict"] == "B is worse"
    assert run_json(capsys, "--a", *a, "--b", *a)["verdict"] == "no difference shown"


def test_runs_that_validated_other_persons_exit_2_naming_them(tmp_path, capsys):
    truth = truth_table()["ans"].to_numpy()
    a = write_run(tmp_path, "a", truth)
    b = write_run(tmp_path, "b", truth, persons=range(2, PERSONS))
    assert cli("compare", "--a", a, "--b", b) == 2
    err = capsys.readouterr().err
    assert "validated different persons" in err and f"only {a} validated person(s) 000000, 000001 (2)" in err
    assert cli("compare", "--a", a, "--b", tmp_path / "nowhere") == 2
    assert "does not exist" in capsys.readouterr().err


def _devbench():
    if not DEVBENCH.is_file():
        pytest.skip(f"{DEVBENCH} is not here")
    spec = importlib.util.spec_from_file_location("devbench_compare", DEVBENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_same_numbers_as_the_devbench_compare(bench, capsys, monkeypatch):
    dev = _devbench()
    answers, subs = bench
    a, b = subs["poor"], [subs["good"][0], subs["poor"][1], subs["good"][2]]  # a noisy, mixed B
    monkeypatch.setattr(sys, "argv", ["compare.py", str(answers), "--a", *map(str, a), "--b", *map(str, b),
                                      "--draws", "300"])
    dev.main()
    printed = capsys.readouterr().out
    ours = run_json(capsys, "--a", *a, "--b", *b, "--answers", answers)
    scores = [float(m) for m in re.findall(r"^[AB] (\d\.\d{4})  ", printed, flags=re.M)]
    assert scores == [float(f"{v:.4f}") for v in ours["a_scores"] + ours["b_scores"]]
    lo, hi = map(float, re.search(r"persons \[([-+.\d]+), ([-+.\d]+)\]", printed).groups())
    assert ours["interval"] == pytest.approx([lo, hi], abs=5.1e-5)
    se = float(re.search(r"\+- ([.\d]+) \(SE\)", printed).group(1))
    assert ours["paired_se"] == pytest.approx(se, abs=5.1e-5)
    assert ours["verdict"] in re.search(r"^verdict: (.*)$", printed, flags=re.M).group(1)
    # the bootstrap's macro F1 is the devbench's under the same weights (to the last bits of the mean)
    truth = pd.read_csv(answers)["ans"].to_numpy()
    pred = pd.read_csv(a[0], dtype={"ImageID": str}).iloc[::-1]["ans"].to_numpy()
    person = np.repeat(np.arange(PERSONS), 7)
    weights = person_weights(PERSONS, 5, seed=0)
    expected = [dev.macro_f1(truth, pred, w[person]) for w in weights]
    assert list(boot_f1(truth, pred, person, weights)) == pytest.approx(expected, rel=1e-12, abs=0)
