"""Rows with some labels missing (`maskds build --extra`) or pseudo labels (`maskds pseudo`): the cache
holds them in a fold that never validates, and the loss skips the heads a row has no label for."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

from maskds.cli.main import main as maskds
from maskds.core.labels import EXTRA as EXTRA_ROW
from maskds.core.labels import (ALL_KNOWN, KNOWN_AGE, KNOWN_BAND, KNOWN_GENDER, KNOWN_INTERVAL, KNOWN_MASK,
                                PSEUDO, decode)
from maskds.core.probabilities import HeadSpec, heads_from_class_probs, to_frame
from maskds.data.cache import load_cache
from maskds.training.datasets import class_and_age
from maskds.training.losses import MaskLoss

from conftest import TINY_FOLDS
from train_helpers import ROOT, TINY, launch, metrics_lines

# (mask, gender, age) cells of the extra set: every head missing at least once
EXTRA = [("wear", "", ""), ("", "female", "34"), ("", "", "61"), ("not_wear", "male", ""), ("incorrect", "male", "20")]


def make_extra(root, synth_data, cells=EXTRA):
    """An --extra folder: images of the synthetic train set, mirrored (a competition photo's own bytes would be
    refused), and labels.csv with the given cells."""
    (root / "imgs").mkdir(parents=True)
    sources = sorted((synth_data / "train" / "images").glob("*/*.jpg"))[: len(cells)]
    lines = ["image,mask,gender,age"]
    for i, (src, (m, g, a)) in enumerate(zip(sources, cells)):
        ImageOps.mirror(Image.open(src)).save(root / "imgs" / f"x{i}.jpg")
        lines.append(f"imgs/x{i}.jpg,{m},{g},{a}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def write_probs(path, data, confident_every=2):
    """A probabilities file for DATA/eval: the true class at 0.95 for every other image, 0.5 for the rest."""
    info = pd.read_csv(data / "info.csv", dtype={"ImageID": str})
    truth = pd.read_csv(data / "answers.csv", dtype={"ImageID": str}).set_index("ImageID").loc[info["ImageID"], "ans"]
    conf = np.where(np.arange(len(info)) % confident_every == 0, 0.95, 0.5)
    cls = np.repeat(((1 - conf) / 17)[:, None], 18, axis=1)
    cls[np.arange(len(info)), truth.to_numpy()] = conf
    heads = {k: v.numpy() for k, v in heads_from_class_probs(torch.from_numpy(cls)).items()}
    to_frame(info["ImageID"].tolist(), {**heads, "class": cls}).to_csv(path, index=False)
    return truth.to_numpy(), conf


def test_a_missing_label_gives_its_head_no_gradient_and_pseudo_rows_are_weighed():
    torch.manual_seed(0)
    logits = torch.randn(3, 8, requires_grad=True)
    known = [ALL_KNOWN, KNOWN_GENDER | KNOWN_BAND | KNOWN_AGE, KNOWN_MASK | KNOWN_BAND | PSEUDO]
    y = torch.tensor([[7, 35, known[0]], [3, 25, known[1]], [14, -1, known[2]]])
    MaskLoss("multihead", pseudo_weight=0.5)(logits, y).backward()
    g = logits.grad
    assert g[1, :3].abs().max() == 0 and g[0, :3].abs().max() > 0  # row 1 has no mask label
    assert g[2, 3:5].abs().max() == 0 and g[2, :3].abs().max() > 0  # row 2 has no gender label
    with torch.no_grad():  # every label known, pseudo_weight 1: the plain per-head loss
        full = torch.tensor([[7, 35, ALL_KNOWN], [3, 25, ALL_KNOWN]])
        assert float(MaskLoss("multihead")(logits[:2], full)) == pytest.approx(
            float(MaskLoss("multihead")(logits[:2], full[:, :2])), rel=1e-6)
        # the pseudo row's mask term: weight 0.5 against row 0's 1
        one = MaskLoss("multihead", head_weights=[1, 0, 0])
        l0 = one(logits[:1], torch.tensor([[7, 35, ALL_KNOWN]]))
        l2 = one(logits[2:], torch.tensor([[14, -1, ALL_KNOWN]]))
        both = MaskLoss("multihead", head_weights=[1, 0, 0], pseudo_weight=0.5)(logits[[0, 2]], y[[0, 2]])
        assert float(both) == pytest.approx((float(l0) + 0.5 * float(l2)) / 1.5, rel=1e-5)


@pytest.mark.parametrize("age_head", ["regression", "distribution"])
def test_a_band_only_row_teaches_a_numeric_age_head_the_band(age_head):
    """A pseudo label knows the band, not the age: training on it alone moves the age into that band."""
    from maskds.core.probabilities import probabilities

    spec = HeadSpec("multihead", age_head)
    y = torch.tensor([[0, -1, KNOWN_MASK | KNOWN_GENDER | KNOWN_BAND], [1, -1, KNOWN_MASK | KNOWN_GENDER | KNOWN_BAND],
                      [2, -1, KNOWN_MASK | KNOWN_GENDER | KNOWN_BAND]])  # bands 0, 1, 2
    logits = torch.zeros(3, spec.num_outputs, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.2)
    for _ in range(300):
        opt.zero_grad()
        MaskLoss(spec)(logits, y).backward()
        opt.step()
    bands = probabilities(logits.detach(), spec)["age"]
    assert bands.argmax(1).tolist() == [0, 1, 2]


def test_a_pseudo_band_under_other_thresholds_is_its_age_interval_and_a_band_only_where_it_fits():
    """A pseudo label's band is the competition's ([0,30), [30,60), [60,+)): numeric age heads learn that
    interval under any thresholds; band-based terms (bands head, 18-way head, soft F1) use it only where
    the interval lies inside the training band of that index, else the row has no band for them."""
    import datasets

    from maskds.training.losses import label_weights

    table = datasets.Dataset.from_dict({"mask": [0, 0, 0, 0], "gender": [1, 1, 1, 1], "age": [-1, -1, -1, 59],
                                        "age_band": [0, 1, 2, -1], "origin": ["pseudo"] * 3 + ["train"]})
    rows = torch.from_numpy(class_and_age(table, [30, 58]))
    assert [bool(k & KNOWN_BAND) for k in rows[:, 2]] == [True, False, True, True]  # [30,60) straddles 58
    assert rows[3, 0] % 3 == 2  # an age in years: its band under the training thresholds
    w = label_weights(rows[:, 2], pseudo_weight=1.0)
    assert w["band"].tolist() == w["class"].tolist() == [1, 0, 1, 1]
    assert w["age"].tolist() == [1, 1, 1, 1]  # regression / distribution: the interval [30, 60) still teaches
    assert class_and_age(table, [30, 60])[:3, 2].tolist() == [
        KNOWN_MASK | KNOWN_GENDER | KNOWN_BAND | PSEUDO | KNOWN_INTERVAL] * 3  # the competition's bands: all fit
    spec = HeadSpec("multihead", "bands", (30, 58))
    logits = torch.zeros(4, spec.num_outputs, requires_grad=True)
    MaskLoss(spec)(logits, rows).backward()
    assert not logits.grad[1, spec.slices()["age"]].any() and logits.grad[0, spec.slices()["age"]].any()


def test_extra_rows_train_every_fold_with_their_missing_labels_missing(tmp_path, synth_data, tiny_cache):
    extra = make_extra(tmp_path / "extra", synth_data)
    cache = tmp_path / "cache"
    assert maskds(["build", str(synth_data), str(cache), "--size", "64", "48", "--folds", str(TINY_FOLDS),
                   "--num-proc", "1", "--extra", str(extra)]) == 0
    train, meta = load_cache(cache)[0]["train"], load_cache(cache)[1]
    plain = load_cache(tiny_cache)[0]["train"]
    assert len(train) == len(plain) + len(EXTRA) and meta["counts"]["extra_images"] == len(EXTRA)
    rows = train.select(range(len(plain), len(train)))
    assert rows["fold"] == [-1] * len(EXTRA) and set(rows["origin"]) == {"extra"}
    assert rows["mask"] == [0, -1, -1, 2, 1] and rows["gender"] == [-1, 1, -1, 0, 0]
    assert rows["age"] == [-1, 34, 61, -1, 20]
    assert train.select(range(len(plain)))["fold"] == plain["fold"]  # the competition's folds unchanged
    known = class_and_age(train, [30, 60])[len(plain):, 2]
    bits = (KNOWN_MASK, KNOWN_GENDER | KNOWN_BAND | KNOWN_AGE, KNOWN_BAND | KNOWN_AGE, KNOWN_MASK | KNOWN_GENDER, ALL_KNOWN)
    assert known.tolist() == [b | EXTRA_ROW for b in bits]  # EXTRA_ROW: weighed by extra_weight


@pytest.mark.parametrize("line,message", [
    ("imgs/x0.jpg,weared,,", "mask 'weared' is not one of wear, incorrect, not_wear"),
    ("imgs/none.jpg,wear,,", "image 'imgs/none.jpg' not found"),
    ("imgs/x1.jpg,,,", "has no label"),
    ("imgs/x1.jpg,,,3.5", "age '3.5' is not whole years"),
    ("imgs/x1.jpg,,other,", "gender 'other' is not one of male, female"),
    ("../extra/imgs/x1.jpg,wear,,", "is not a path inside"),       # exists, but outside the folder: never
    ("/etc/hostname,wear,,", "is not a path inside"),               # read (pseudo --faces copies these paths)
])
def test_bad_extra_data_is_refused_naming_the_file_and_line(tmp_path, synth_data, capsys, line, message):
    extra = make_extra(tmp_path / "extra", synth_data)
    with open(extra / "labels.csv", "a") as f:
        f.write(line + "\n")
    cache = tmp_path / "out" / "cache"
    assert maskds(["build", str(synth_data), str(cache), "--num-proc", "1", "--extra", str(extra)]) == 2
    err = capsys.readouterr().err
    assert f"{extra / 'labels.csv'} line 7: " in err and message in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_pseudo_adds_the_confident_eval_images_to_a_copy(tmp_path, synth_data, tiny_cache):
    data = synth_data / "eval"
    truth, conf = write_probs(tmp_path / "p.csv", data)
    before = {p: p.read_bytes() for p in tiny_cache.rglob("*") if p.is_file()}
    out = tmp_path / "pseudo"
    assert maskds(["pseudo", str(tmp_path / "p.csv"), str(data), str(tiny_cache), str(out), "--min-prob", "0.9"]) == 0
    assert {p: p.read_bytes() for p in tiny_cache.rglob("*") if p.is_file()} == before  # the source untouched
    train, meta = load_cache(out)[0]["train"], load_cache(out)[1]
    plain = load_cache(tiny_cache)[0]["train"]
    added = train.select(range(len(plain), len(train)))
    assert len(added) == int((conf >= 0.9).sum()) == meta["counts"]["pseudo_images"]
    assert set(added["origin"]) == {"pseudo"} and set(added["fold"]) == {-1} and set(added["age"]) == {-1}
    labels = [decode(int(c)) for c in truth[conf >= 0.9]]
    assert list(zip(added["mask"], added["gender"], added["age_band"])) == labels
    pseudo_known = KNOWN_MASK | KNOWN_GENDER | KNOWN_BAND | KNOWN_INTERVAL | PSEUDO
    assert (class_and_age(train, [30, 60])[len(plain):, 2] == pseudo_known).all()
    assert meta["args"]["pseudo"]["min_prob"] == 0.9


def test_pseudo_from_probabilities_refuses_the_options_of_the_faces_form(tmp_path, synth_data, tiny_cache, capsys):
    write_probs(tmp_path / "p.csv", synth_data / "eval")
    out = tmp_path / "pseudo"
    assert maskds(["pseudo", str(tmp_path / "p.csv"), str(synth_data / "eval"), str(tiny_cache), str(out),
                   "--min-prob", "0.9", "--heads", "gender", "--tta", "hflip"]) == 2
    assert "--heads and --tta only apply with --faces" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("min_prob", ["0", "1.5", "-0.2"])
def test_pseudo_refuses_a_min_prob_outside_0_1(tmp_path, synth_data, tiny_cache, capsys, min_prob):
    write_probs(tmp_path / "p.csv", synth_data / "eval")
    out = tmp_path / "pseudo"
    assert maskds(["pseudo", str(tmp_path / "p.csv"), str(synth_data / "eval"), str(tiny_cache), str(out),
                   "--min-prob", min_prob]) == 2
    assert "--min-prob must be in (0, 1]" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".pseudo*"))


@pytest.mark.slow
def test_extra_and_pseudo_rows_train_under_two_processes(tmp_path, synth_data):
    """Extra rows (each head missing somewhere) and pseudo rows train every fold, never validate."""
    cache = tmp_path / "cache"
    extra = make_extra(tmp_path / "extra", synth_data)
    assert maskds(["build", str(synth_data), str(cache), "--size", "64", "48", "--folds", str(TINY_FOLDS),
                   "--num-proc", "1", "--extra", str(extra)]) == 0
    write_probs(tmp_path / "p.csv", synth_data / "eval")
    both = tmp_path / "both"
    assert maskds(["pseudo", str(tmp_path / "p.csv"), str(synth_data / "eval"), str(cache), str(both),
                   "--min-prob", "0.9"]) == 0
    table = load_cache(both)[0]["train"]
    fold0 = sum(1 for f in table["fold"] if f == 0)
    train_rows = len(table) - fold0
    r = launch(["--config", str(ROOT / "configs/demo.yaml"), f"cache={both}", f"output_dir={tmp_path}", "name=run",
                "folds=all", "epochs=1", "batch_size=4", "pseudo_weight=0.5", *TINY], "cpu_2proc.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").glob("fold*")) == [f"fold{k}" for k in range(TINY_FOLDS)]
    line = metrics_lines(tmp_path / "run" / "fold0")[0]
    assert line["ema"]["n"] == fold0  # validation: the fold's own persons only
    assert line["updates"] == -(-(train_rows // 4) // 2)  # every extra and pseudo row trains (2 processes x 4)
    assert np.isfinite(line["train_loss"])


def test_person_sampling_keeps_one_image_per_person_for_gender_and_age_each_epoch():
    from maskds.training.draws import PersonDraw

    persons = np.repeat(["a", "b", "c"], [7, 7, 3])
    rows = np.tile([[4, 33, ALL_KNOWN]], (len(persons), 1))
    draw = PersonDraw(persons, seed=3)
    chosen = []
    for epoch in range(6):
        known = np.array([draw.labels(rows[i], i, epoch)[2] for i in range(len(persons))])
        assert (known & KNOWN_MASK).all()  # the mask head learns from every image
        full = known == ALL_KNOWN
        assert [int(full[persons == p].sum()) for p in ("a", "b", "c")] == [1, 1, 1]
        assert set(known[~full]) == {KNOWN_MASK}
        chosen.append(tuple(np.flatnonzero(full)))
    assert len(set(chosen)) > 1  # drawn anew each epoch
    assert chosen == [tuple(np.flatnonzero(np.array([PersonDraw(persons, 3).labels(rows[i], i, e)[2]
                                                      for i in range(len(persons))]) == ALL_KNOWN))
                      for e in range(6)]  # and the same draw every time for the same seed and epoch
    from maskds.training.device_images import SampleParams  # the GPU data path draws the same way

    params = SampleParams(rows, None, 0, draw)
    params.set_epoch(4)
    assert [int(t[2][2]) for t in params.__getitems__(list(range(len(persons))))] == [
        int(draw.labels(rows[i], i, 4)[2]) for i in range(len(persons))]


@pytest.mark.slow
def test_person_sampling_trains_under_two_processes(tiny_cache, tmp_path):
    r = launch(["--config", str(ROOT / "configs/demo.yaml"), f"cache={tiny_cache}", f"output_dir={tmp_path}",
                "name=ps", "folds=[0]", "epochs=1", "batch_size=4", "person_sampling=true", *TINY], "cpu_2proc.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.isfinite(metrics_lines(tmp_path / "ps" / "fold0")[0]["train_loss"])
