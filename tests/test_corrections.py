"""Label corrections: the shipped defaults, user files, malformed files, and exactly-what-they-name changes."""
from __future__ import annotations

import dataclasses

import pytest

from maskds.core import labels
from maskds.core.errors import UserError
from maskds.data.corrections import apply_corrections, load_corrections
from maskds.data.layout import ImageRecord


def _person(pid: str, gender: int = 0, age: int = 40) -> list[ImageRecord]:
    return [ImageRecord(pid, gender, "Asian", age, mask, stem, f"train/images/{pid}/{stem}.jpg")
            for stem, mask in labels.IMAGE_STEMS.items()]


def test_default_file_holds_the_documented_errors():
    corr = load_corrections("default")
    assert corr.source == "default" and corr.sha256
    female = {"001498-1", "004432", "005223"}
    male = {"006359", "006360", "006361", "006362", "006363", "006364"}
    swapped = {"000020", "004418", "005227"}
    assert set(corr.entries) == female | male | swapped
    assert all(corr.entries[p] == {"gender": 1} for p in female)
    assert all(corr.entries[p] == {"gender": 0} for p in male)
    assert all(corr.entries[p] == {"swap": ("incorrect_mask", "normal")} for p in swapped)


def test_none_has_no_entries():
    corr = load_corrections("none")
    assert corr.source == "none" and corr.entries == {} and corr.sha256 is None


def test_corrections_change_exactly_the_labels_they_name(tmp_path):
    records = _person("000001") + _person("000002") + _person("000003") + _person("000004")
    f = tmp_path / "c.yaml"
    f.write_text('"000001": {gender: female}\n"000002": {swap: [incorrect_mask, normal]}\n'
                 '"000003": {age: 61}\n"999999": {gender: male}\n')
    fixed, applied, missing = apply_corrections(records, load_corrections(f))
    expected = []
    for r in records:
        if r.person_id == "000001":
            r = dataclasses.replace(r, gender=1)
        elif r.person_id == "000002" and r.image_name in ("incorrect_mask", "normal"):
            r = dataclasses.replace(r, mask=3 - r.mask)  # 1 <-> 2
        elif r.person_id == "000003":
            r = dataclasses.replace(r, age=61)
        expected.append(r)
    assert fixed == expected
    assert missing == ["999999"]
    assert {(a["person_id"], a["field"]) for a in applied} == {("000001", "gender"), ("000002", "swap"),
                                                               ("000003", "age")}


def test_a_correction_that_matches_the_data_changes_nothing(tmp_path):
    records = _person("000001", gender=1)
    f = tmp_path / "c.yaml"
    f.write_text('"000001": {gender: female}\n')
    fixed, applied, _ = apply_corrections(records, load_corrections(f))
    assert fixed == records and applied == []


@pytest.mark.parametrize("text, key", [
    ("004432: {gender: female}\n", "key 2330"),  # unquoted id: YAML 1.1 reads 004432 as octal 2330
    ('"000001": {gender: woman}\n', "000001"),
    ('"000001": {swap: [mask1]}\n', "000001"),
    ('"000001": {swap: [normal, nose]}\n', "000001"),
    ('"000001": {colour: red}\n', "000001"),
    ('"000001": {age: old}\n', "000001"),
    ('"000001": female\n', "000001"),
])
def test_malformed_files_name_the_file_and_key(tmp_path, text, key):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as err:
        load_corrections(f)
    assert str(f) in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("text", ["- just\n- a list\n", '"000001": {gender: [unclosed\n'])
def test_files_that_are_not_a_mapping_are_refused(tmp_path, text):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=str(f)):
        load_corrections(f)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_corrections(tmp_path / "nope.yaml")


def test_build_applies_a_user_file_and_records_it(synth_data, tmp_path, capsys):
    from maskds.data.cache import build_cache, load_cache

    from data_helpers import copy_raw

    data = copy_raw(synth_data, tmp_path / "d", persons=3, eval_images=None)
    from maskds.data.layout import read_train
    first = read_train(data)[0]
    f = tmp_path / "mine.yaml"
    other = labels.GENDER_NAMES[1 - first.gender]
    f.write_text(f'"{first.person_id}": {{gender: {other}, swap: [incorrect_mask, normal]}}\n'
                 '"999999": {age: 33}\n')
    build_cache(data, tmp_path / "cache", size_hw=(32, 24), folds=2, corrections=str(f), num_proc=1)
    dd, meta = load_cache(tmp_path / "cache")
    rows = [r for r in dd["train"].remove_columns("image") if r["person_id"] == first.person_id]
    assert {r["gender"] for r in rows} == {1 - first.gender}
    assert {r["image_name"]: r["mask"] for r in rows}["normal"] == 1
    assert meta["args"]["corrections"] == str(f.resolve())
    assert meta["corrections"]["source"] == str(f.resolve())
    assert {a["field"] for a in meta["corrections"]["applied"]} == {"gender", "swap"}
    assert meta["corrections"]["not_found"] == ["999999"]
    assert "999999" in capsys.readouterr().err  # unknown ids: a warning, not an error
