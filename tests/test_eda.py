"""`maskds eda`: the plots and a summary.md that links them with the key numbers."""
from __future__ import annotations

import pytest
from PIL import Image

from maskds.core.errors import UserError
from maskds.data.eda import run_eda

PLOTS = ("classes.png", "heads.png", "ages.png", "folds.png", "samples.png")


def test_eda_writes_plots_and_summary(synth_data, tmp_path):
    out = run_eda(synth_data, tmp_path / "eda", age_thresholds=(30, 58))
    for name in PLOTS:
        with Image.open(out / name) as img:
            assert img.size[0] > 300 and img.size[1] > 200
    summary = (out / "summary.md").read_text()
    for name in PLOTS:
        assert f"]({name})" in summary
    assert "24 persons, 168 train images" in summary
    assert "< 30, 30..57, >= 58" in summary
    assert "56 images" in summary  # eval part


def test_eda_refuses_decreasing_thresholds(synth_data, tmp_path):
    with pytest.raises(UserError, match="--age-thresholds"):
        run_eda(synth_data, tmp_path / "eda", age_thresholds=(60, 30))


def test_eda_applies_the_corrections_it_is_given(synth_data, tmp_path):
    person = next(p for p in (synth_data / "train" / "images").iterdir() if not p.name.startswith("."))
    pid, gender = person.name.split("_")[0], person.name.split("_")[1]
    fix = tmp_path / "fix.yaml"
    fix.write_text(f'"{pid}": {{gender: {"male" if gender == "female" else "female"}}}\n')
    run_eda(synth_data, tmp_path / "default")
    run_eda(synth_data, tmp_path / "fixed", corrections=str(fix))
    assert f"label corrections applied ({fix}): 1" in (tmp_path / "fixed" / "summary.md").read_text()
    assert "label corrections applied (default): 0" in (tmp_path / "default" / "summary.md").read_text()
