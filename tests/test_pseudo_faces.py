"""`maskds pseudo --faces DIR --run RUN OUT`: any folder of faces labelled by a run, the heads asked for, at a
threshold, into an `--extra` folder that `maskds build` reads."""
from __future__ import annotations

import numpy as np
import pandas as pd

from maskds.cli.main import main as maskds
from maskds.external.pseudo_faces import AGE_RANGES
from maskds.cli.infer import main as infer
from maskds.core.labels import GENDER_NAMES

from test_inference import make_eval_dir, make_run


def run_probs(tmp_path, run, data) -> pd.DataFrame:
    out = tmp_path / "sub.csv"
    args = ["--run", str(run), "--data", str(data), "--out", str(out), "--tta", "none", "--num-workers", "0"]
    assert infer(args) == 0
    return pd.read_csv(tmp_path / "sub.probs.csv", dtype={"ImageID": str}).set_index("ImageID")


def test_a_folder_of_images_gets_the_runs_answers_for_the_heads_asked(tmp_path, synth_data):
    run = make_run(tmp_path / "run")
    data = make_eval_dir(tmp_path / "eval")
    out = tmp_path / "labelled"
    assert maskds(["pseudo", "--faces", str(data / "images"), "--run", str(run), str(out), "--min-prob", "0.01",
                   "--tta", "none"]) == 0
    got = pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False).set_index("image")
    probs = run_probs(tmp_path, run, data)
    gender = probs[["gender_p0", "gender_p1"]].to_numpy().argmax(1)
    age = probs[["age_p0", "age_p1", "age_p2"]].to_numpy().argmax(1)
    assert sorted(got.index) == sorted(probs.index)
    for i, image in enumerate(probs.index):
        assert got.loc[image, "gender"] == GENDER_NAMES[gender[i]]
        assert got.loc[image, "age"] == AGE_RANGES[age[i]]
        assert got.loc[image, "mask"] == ""                                  # not asked for
        assert (out / image).read_bytes() == (data / "images" / image).read_bytes()
    assert maskds(["build", str(synth_data), str(tmp_path / "cache"), "--size", "32", "24", "--folds", "3",
                   "--num-proc", "1", "--extra", str(out)]) == 0                # an --extra folder build takes


def test_the_threshold_keeps_only_sure_guesses_and_known_labels_stay(tmp_path):
    run = make_run(tmp_path / "run")
    data = make_eval_dir(tmp_path / "eval", n=9)
    ids = pd.read_csv(data / "info.csv", dtype=str).ImageID.tolist()
    probs = run_probs(tmp_path, run, data)
    folder = data / "images"
    (folder / "labels.csv").write_text("image,mask,gender,age,person\n" + "".join(
        f"{i},not_wear,{'female' if k == 0 else ''},,p{k}\n" for k, i in enumerate(ids)))
    top = probs.loc[ids, ["gender_p0", "gender_p1"]].to_numpy().max(1)
    cut = float(np.median(top))
    out = tmp_path / "labelled"
    assert maskds(["pseudo", "--faces", str(folder), "--run", str(run), str(out), "--min-prob", str(cut),
                   "--heads", "gender", "--tta", "none"]) == 0
    got = pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False).set_index("image").loc[ids]
    assert got.gender.iloc[0] == "female"                                    # a known label is kept
    sure = top >= cut
    sure[0] = True
    assert ((got.gender != "").to_numpy() == sure).all()                     # the rest only where sure
    assert (got.age == "").all() and (got["mask"] == "not_wear").all()


def test_bad_arguments_name_what_to_do(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    data = make_eval_dir(tmp_path / "eval")
    assert maskds(["pseudo", "--faces", str(data / "images"), str(tmp_path / "o"), "--min-prob", "0.5"]) == 2
    assert "needs --run RUN" in capsys.readouterr().err
    assert maskds(["pseudo", "--faces", str(data / "images"), "--run", str(run), str(tmp_path / "o"),
                   "--min-prob", "0.5", "--heads", "hair"]) == 2
    assert "--heads: hair" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_head_the_run_did_not_learn_is_refused_and_unlabelled_rows_are_labelled(tmp_path, capsys):
    run = make_run(tmp_path / "run", heads=("mask", "gender"))
    data = make_eval_dir(tmp_path / "eval")
    ids = pd.read_csv(data / "info.csv", dtype=str).ImageID.tolist()
    (data / "images" / "labels.csv").write_text("image,mask,gender,age\n" + "".join(f"{i},,,\n" for i in ids))
    args = ["pseudo", "--faces", str(data / "images"), "--run", str(run), "--min-prob", "0.01", "--tta", "none"]
    assert maskds([*args, str(tmp_path / "o1")]) == 2                       # age: a specialist without it
    assert "--heads age: run" in capsys.readouterr().err and not (tmp_path / "o1").exists()
    assert maskds([*args, "--heads", "gender", str(tmp_path / "o2")]) == 0  # rows with no label at all: labelled
    assert (pd.read_csv(tmp_path / "o2" / "labels.csv", dtype=str, keep_default_na=False).gender != "").all()


def fake_probs(monkeypatch, by_image: dict[str, dict[str, list[float]]]) -> None:
    """`pseudo --faces` answers with these probabilities per image (head -> probabilities), not a run's."""
    from maskds.external import pseudo_faces

    def predict(run, paths, tta, batch_size, heads, face_images=frozenset()):
        return {h: np.array([by_image[p.name][h] for p in paths]) for h in heads}

    monkeypatch.setattr(pseudo_faces, "_predict", predict)


def test_a_persons_photos_get_one_label_from_their_mean_and_known_labels_apply_to_all(tmp_path, monkeypatch):
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    rows = [  # image, mask, gender, age, person; the run's gender, mask and age probabilities
        ("a1", "", "", "", "A", [0.9, 0.1], [0.9, 0.05, 0.05], [0.8, 0.1, 0.1]),  # A: mean male 0.67, age 0-29
        ("a2", "", "", "", "A", [0.3, 0.7], [0.05, 0.05, 0.9], [0.3, 0.1, 0.6]),  # ...guessed alone: female, 60-
        ("a3", "", "", "", "A", [0.8, 0.2], [0.9, 0.05, 0.05], [0.8, 0.1, 0.1]),
        ("b1", "", "female", "", "B", [0.5, 0.5], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]),  # B: known female
        ("b2", "", "", "", "B", [0.99, 0.01], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]),   # ...guessed male alone
        ("b3", "", "", "34", "B", [0.99, 0.01], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]),  # known age 34
        ("c1", "", "", "", "C", [0.95, 0.05], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]),  # C: mean 0.525, unsure
        ("c2", "", "", "", "C", [0.1, 0.9], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]),
        ("d1", "", "female", "", "D", [0.9, 0.1], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]),  # D: known both ways
        ("d2", "", "male", "", "D", [0.9, 0.1], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]),
        ("d3", "", "", "", "D", [0.9, 0.1], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]),
        ("e1", "", "", "", "", [0.1, 0.9], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]),    # no person: on its own
    ]
    for r in rows:
        Image.new("RGB", (24, 32), (100, 80, 60)).save(folder / f"{r[0]}.jpg")
    (folder / "labels.csv").write_text("image,mask,gender,age,person\n" + "".join(
        f"{r[0]}.jpg,{r[1]},{r[2]},{r[3]},{r[4]}\n" for r in rows))
    fake_probs(monkeypatch, {f"{r[0]}.jpg": {"gender": r[5], "mask": r[6], "age": r[7]} for r in rows})
    out = tmp_path / "labelled"
    assert maskds(["pseudo", "--faces", str(folder), "--run", str(tmp_path / "run"), str(out), "--min-prob", "0.6",
                   "--heads", "mask,gender,age"]) == 0
    got = pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False).set_index("image")
    g = {i[:-4]: v for i, v in got.gender.items()}
    a = {i[:-4]: v for i, v in got.age.items()}
    m = {i[:-4]: v for i, v in got["mask"].items()}
    assert [g["a1"], g["a2"], g["a3"]] == ["male"] * 3                   # one label: the person's mean
    assert [a["a1"], a["a2"], a["a3"]] == [AGE_RANGES[0]] * 3
    assert [g["b1"], g["b2"], g["b3"]] == ["female"] * 3                 # known on one photo: on all of them
    assert [a["b1"], a["b2"], a["b3"]] == ["34"] * 3
    assert [g["c1"], g["c2"]] == ["", ""] and [a["c1"], a["c2"]] == ["", ""]  # the mean is below --min-prob
    assert [g["d1"], g["d2"], g["d3"]] == ["female", "male", ""]         # known both ways: nothing guessed
    assert g["e1"] == "female"                                            # no person: the photo alone
    assert [m["a1"], m["a2"], m["a3"]] == ["wear", "not_wear", "wear"]    # the mask is each photo's own


def labelled_faces(tmp_path, monkeypatch, rows, heads: str, capsys=None) -> pd.DataFrame:
    """`pseudo --faces` on `rows` (image, gender, age, person, the run's gender and age probabilities):
    labels.csv's rows by image stem (with `capsys`: and what it said, on one line)."""
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    for r in rows:
        Image.new("RGB", (24, 32), (100, 80, 60)).save(folder / f"{r[0]}.jpg")
    (folder / "labels.csv").write_text("image,mask,gender,age,person\n" + "".join(
        f"{r[0]}.jpg,,{r[1]},{r[2]},{r[3]}\n" for r in rows))
    fake_probs(monkeypatch, {f"{r[0]}.jpg": {"gender": r[4], "age": r[5], "mask": [0.9, 0.05, 0.05]} for r in rows})
    out = tmp_path / "labelled"
    assert maskds(["pseudo", "--faces", str(folder), "--run", str(tmp_path / "run"), str(out), "--min-prob", "0.6",
                   "--heads", heads]) == 0
    got = pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False)
    got = got.set_index(got.image.str[:-4])
    return got if capsys is None else (got, " ".join(capsys.readouterr().err.split()))


def test_a_persons_known_ages_agree_when_they_fall_in_one_band(tmp_path, monkeypatch):
    old = [0.05, 0.05, 0.9]  # the run says 60- for every photo
    rows = [("f1", "", "34", "F", [0.5, 0.5], old), ("f2", "", "35", "F", [0.5, 0.5], old),  # one band: agree
            ("f3", "", "30-39", "F", [0.5, 0.5], old), ("f4", "", "", "F", [0.5, 0.5], old),
            ("g1", "", "20", "G", [0.5, 0.5], old), ("g2", "", "45", "G", [0.5, 0.5], old),  # two bands: not
            ("g3", "", "", "G", [0.5, 0.5], old)]
    age = labelled_faces(tmp_path, monkeypatch, rows, "age").age
    assert [age["f1"], age["f2"], age["f3"]] == ["34", "35", "30-39"]  # each photo's own known value stays
    assert age.get("f4") == "34"                                       # the person's first known age
    assert [age["g1"], age["g2"], age.get("g3")] == ["20", "45", None]  # two bands: none given (row dropped)


def test_labels_copied_from_a_persons_other_photos_are_counted_and_said(tmp_path, monkeypatch, capsys):
    sure, unsure = [0.95, 0.05], [0.5, 0.5]
    rows = [("a1", "female", "34", "A", unsure, [0.3, 0.3, 0.4]),  # A: known -> copied to a2, a3
            ("a2", "", "", "A", unsure, [0.3, 0.3, 0.4]), ("a3", "", "", "A", unsure, [0.3, 0.3, 0.4]),
            ("b1", "", "", "B", sure, [0.9, 0.05, 0.05])]            # B: guessed, both heads
    got, said = labelled_faces(tmp_path, monkeypatch, rows, "gender,age", capsys)
    assert got.gender.tolist() == ["female"] * 3 + ["male"] and got.age.tolist() == ["34"] * 3 + [AGE_RANGES[0]]
    assert "guessed at --min-prob 0.6: gender 1, age 1" in said
    assert "copied from the person's other photos: gender 2, age 2" in said
