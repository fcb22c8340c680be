"""`maskds score`: known numbers on a hand-computed case, the JSON line, the plot, and each bad input."""
from __future__ import annotations

import json

import pytest

from maskds.cli.main import main as cli_main
from maskds.core.errors import UserError
from maskds.evaluation.score import run_score

# Truth and prediction of 4 images; classes 0=(wear,male,<30), 7=(incorrect,male,30-59),
# 13=(not_wear,male,30-59). Hand computation (sklearn macro = mean over labels seen in either):
#   18-class: F1(0)=2/3 (P 1, R 1/2), F1(7)=2/3 (P 1/2, R 1), F1(13)=1      -> 7/9
#   mask: true 0,0,1,2 pred 0,1,1,2 -> F1 2/3, 2/3, 1                        -> 7/9
#   gender: all male                                                        -> 1
#   age: true 0,0,1,1 pred 0,1,1,1 -> F1(0)=2/3, F1(1)=2*(2/3)/(5/3)=4/5     -> 11/15
#   accuracy 3/4
TRUTH = {"a.jpg": 0, "b.jpg": 0, "c.jpg": 7, "d.jpg": 13}
PRED = {"a.jpg": 0, "b.jpg": 7, "c.jpg": 7, "d.jpg": 13}
EXPECTED = {"macro_f1": 7 / 9, "mask_f1": 7 / 9, "gender_f1": 1.0, "age_f1": 11 / 15, "accuracy": 0.75}


def write_csv(path, rows: dict, order=None):
    order = order or list(rows)
    path.write_text("ImageID,ans\n" + "".join(f"{k},{rows[k]}\n" for k in order))
    return path


@pytest.fixture
def files(tmp_path):
    # The submission lists the ids in another order: scoring must align by ImageID, not by row.
    sub = write_csv(tmp_path / "sub.csv", PRED, order=["d.jpg", "b.jpg", "a.jpg", "c.jpg"])
    ans = write_csv(tmp_path / "answers.csv", TRUTH)
    return sub, ans


def test_known_numbers(files, capsys):
    sub, ans = files
    result = run_score(sub, ans)
    for key, value in EXPECTED.items():
        assert result[key] == pytest.approx(value), key
    assert result["n"] == 4
    out = capsys.readouterr().out
    assert "0.7778" in out and "0.7333" in out  # the table shows the numbers
    assert "incorrect/male/30-59" in out         # and the confusion matrix rows are named


def test_json_is_one_line_with_the_scores(files, capsys):
    sub, ans = files
    assert cli_main(["score", str(sub), str(ans), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    for key, value in EXPECTED.items():
        assert data[key] == pytest.approx(value), key


def test_plot_writes_png(files, tmp_path, capsys):
    sub, ans = files
    png = tmp_path / "plots" / "cm.png"
    run_score(sub, ans, as_json=True, plot=png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(capsys.readouterr().out.strip().splitlines()) == 1  # --json stays one line with --plot


@pytest.mark.parametrize("content, expect", [
    ("ImageID,ans\na.jpg,0\nb.jpg,7\nc.jpg,7\n", "missing from"),                    # d.jpg missing
    ("ImageID,ans\na.jpg,0\nb.jpg,7\nc.jpg,7\nd.jpg,13\nz.jpg,1\n", "z.jpg"),        # extra id
    ("ImageID,ans\na.jpg,0\na.jpg,7\nc.jpg,7\nd.jpg,13\n", "more than once: a.jpg"),  # duplicate
    ("ImageID,ans\na.jpg,0\nb.jpg,18\nc.jpg,7\nd.jpg,13\n", "b.jpg=18"),             # out of range
    ("ImageID,ans\na.jpg,0\nb.jpg,x\nc.jpg,-1\nd.jpg,13\n", "c.jpg=-1"),             # not a class id
    ("ImageID,pred\na.jpg,0\n", "no ans column"),
    ("ImageID,ans\n", "no rows"),
])
def test_bad_submission_names_the_problem(tmp_path, content, expect):
    sub = tmp_path / "sub.csv"
    sub.write_text(content)
    ans = write_csv(tmp_path / "answers.csv", TRUTH)
    with pytest.raises(UserError) as err:
        run_score(sub, ans)
    assert expect in str(err.value)
    assert "sub.csv" in str(err.value)


def test_missing_file_exits_2(tmp_path, capsys):
    ans = write_csv(tmp_path / "answers.csv", TRUTH)
    code = cli_main(["score", str(tmp_path / "nope.csv"), str(ans)])
    assert code == 2
    assert "nope.csv" in capsys.readouterr().err
