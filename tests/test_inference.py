"""infer.py: soft-voting arithmetic, fold x TTA averages, transforms from checkpoints, decode-once, bad inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from maskds.core.images import cached_pixels
from maskds.core.probabilities import PROB_COLUMNS, HeadSpec, probabilities
from maskds.cli.infer import main
from maskds.inference.models import build_transform, view_params
from maskds.inference.predict import shard_batches
from maskds.inference.voting import answers, combine_folds, combine_runs
from maskds.model.checkpoint import read_best, save_best
from maskds.config.keys import TrainConfig
from maskds.model.network import create_model
from maskds.model.transforms import eval_transform

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def make_run(root, head="multihead", folds=(0, 1), image_size=(40, 32), cache_size=(48, 36), seed=0,
             heads=("mask", "gender", "age"), age_head="bands"):
    """A run folder of untrained test_efficientnet folds with random (non-uniform) output layers;
    `heads`: the heads its config says it learned (a specialist's: some)."""
    config = TrainConfig(model="test_efficientnet", pretrained="none", head=head, image_size=list(image_size),
                         mean=MEAN, std=STD, heads=list(heads), age_head=age_head)
    resolved = {"model": "test_efficientnet", "head": head, "age_head": age_head, "image_size": list(image_size),
                "mean": MEAN, "std": STD, "cache_size": list(cache_size), "age_thresholds": [30, 60],
                "heads": list(heads), "face_crop": None}
    for k in folds:
        torch.manual_seed(seed * 100 + k)
        model = create_model("test_efficientnet", HeadSpec(head, age_head))
        torch.nn.init.normal_(model.classifier.weight, std=2.0)  # confident, fold-specific answers
        (root / f"fold{k}").mkdir(parents=True, exist_ok=True)
        save_best(root / f"fold{k}" / "best.safetensors", model.state_dict(), config, resolved,
                  {"fold": k, "epoch": 0, "metrics": {}})
    return root


def make_eval_dir(root, n=7, seed=0):
    """Eval folder of n images of assorted sizes/formats; info.csv deliberately not in name order."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    names = ["f3", "a1", "z9", "b2", "c7", "a0", "q5", "m4", "d8", "k1", "e6", "x2", "g0"]
    ids = [f"{names[i % len(names)]}{i // len(names) or ''}.{'png' if i % 3 == 0 else 'jpg'}" for i in range(n)]
    for i, name in enumerate(ids):
        arr = rng.integers(0, 256, (60 + 4 * (i % 9), 45 + 2 * (i % 7), 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "images" / name)
    pd.DataFrame({"ImageID": ids, "ans": 0}).to_csv(root / "info.csv", index=False)
    return root


@pytest.fixture
def eval_dir(tmp_path):
    return make_eval_dir(tmp_path / "eval")


def manual_run_probs(run, data, ids, tta: bool, views=None) -> dict[str, np.ndarray]:
    """Per-image probabilities computed the slow, obvious way: every fold, every view, averaged.
    `views`: functions of the batch to average over instead (tta then is ignored)."""
    per_fold = []
    for ckpt in sorted(run.glob("fold*/best.safetensors")):
        best = read_best(ckpt)
        r = best.resolved
        model = create_model(r["model"], r["head"])
        model.load_state_dict(best.state_dict)
        model.eval()
        tf = eval_transform(r["image_size"])
        x = torch.stack([tf(image=cached_pixels(data / "images" / i, r["cache_size"]))["image"] for i in ids])
        with torch.no_grad():
            if views is not None:
                outs = [probabilities(model(view(x)), r["head"]) for view in views]
            else:
                outs = [probabilities(model(x), r["head"])]
                if tta:
                    outs.append(probabilities(model(x.flip(-1)), r["head"]))
        per_fold.append({k: sum(v[k] for v in outs).numpy() / len(outs) for k in outs[0]})
    head = read_best(ckpt).resolved["head"]
    if head == "multihead":
        avg = {k: np.mean([f[k] for f in per_fold], axis=0) for k in ("mask", "gender", "age")}
        cls = np.einsum("nm,ng,na->nmga", avg["mask"], avg["gender"], avg["age"]).reshape(len(ids), 18)
        return {**avg, "class": cls}
    cls = np.mean([f["class"] for f in per_fold], axis=0)
    cube = cls.reshape(-1, 3, 2, 3)
    return {"mask": cube.sum((2, 3)), "gender": cube.sum((1, 3)), "age": cube.sum((1, 2)), "class": cls}


def read_probs_frame(path, ids):
    df = pd.read_csv(path, dtype={"ImageID": str})
    assert df["ImageID"].tolist() == ids
    return df


def test_combine_folds_multihead_is_product_of_averaged_heads():
    f1 = {"mask": [[0.6, 0.3, 0.1]], "gender": [[0.9, 0.1]], "age": [[0.1, 0.8, 0.1]]}
    f2 = {"mask": [[0.2, 0.6, 0.2]], "gender": [[0.5, 0.5]], "age": [[0.3, 0.2, 0.5]]}
    folds = [{k: np.array(v) for k, v in f.items()} for f in (f1, f2)]
    out = combine_folds(folds, "multihead")
    np.testing.assert_allclose(out["mask"], [[0.4, 0.45, 0.15]])
    np.testing.assert_allclose(out["gender"], [[0.7, 0.3]])
    np.testing.assert_allclose(out["age"], [[0.2, 0.5, 0.3]])
    # class 7 = (incorrect, male, 30-59): 0.45 * 0.7 * 0.5, the largest product
    assert out["class"][0, 7] == pytest.approx(0.45 * 0.7 * 0.5)
    assert out["class"][0, 0 * 6 + 1 * 3 + 2] == pytest.approx(0.4 * 0.3 * 0.3)
    assert out["class"].sum() == pytest.approx(1.0)
    assert answers(out).tolist() == [7]


def test_combine_folds_single_averages_class_probs_and_marginals():
    a, b = np.zeros((1, 18)), np.zeros((1, 18))
    a[0, 4], a[0, 17] = 0.75, 0.25
    b[0, 17], b[0, 10] = 0.5, 0.5
    out = combine_folds([{"class": a}, {"class": b}], "single")
    expect = np.zeros((1, 18))
    expect[0, 4], expect[0, 17], expect[0, 10] = 0.375, 0.375, 0.25
    np.testing.assert_allclose(out["class"], expect)
    np.testing.assert_allclose(out["mask"], [[0.375, 0.25, 0.375]])   # class 4 -> mask 0, 10 -> 1, 17 -> 2
    np.testing.assert_allclose(out["gender"], [[0.0, 1.0]])            # 4, 10, 17 are all female
    np.testing.assert_allclose(out["age"], [[0.0, 0.625, 0.375]])      # 4 and 10 are 30-59, 17 is >=60
    assert answers(out).tolist() == [4]  # tie 4 vs 17 goes to the lower id


def test_combine_runs_weighted_mean_can_change_the_answer():
    def run(cls):
        p = np.zeros((1, 18))
        p[0, cls] = 1.0
        return {"mask": np.ones((1, 3)) / 3, "gender": np.ones((1, 2)) / 2, "age": np.ones((1, 3)) / 3, "class": p}

    r1 = run(2)
    r2 = {**run(5), "class": np.where(np.arange(18) == 5, 0.6, 0.4 / 17)[None]}
    even = combine_runs([r1, r2])
    assert even["class"][0, 2] == pytest.approx(0.5 + 0.2 / 17) and answers(even).tolist() == [2]
    heavy = combine_runs([r1, r2], [1, 3])
    assert heavy["class"][0, 5] == pytest.approx(0.25 * 0 + 0.75 * 0.6) and answers(heavy).tolist() == [5]
    with pytest.raises(ValueError):
        combine_runs([r1, r2], [1.0])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_batches_cover_each_image_once_in_the_same_batches(world):
    one = shard_batches(23, 4, 0, 1)
    shards = [shard_batches(23, 4, r, world) for r in range(world)]
    flat = sorted(i for s in shards for b in s for i in b)
    assert flat == list(range(23))
    assert sorted(b for s in shards for b in s) == one


def test_transform_from_checkpoint_equals_training_eval_transform(tmp_path):
    run = make_run(tmp_path / "run", folds=(0,), image_size=(40, 32), cache_size=(48, 36))
    resolved = read_best(run / "fold0" / "best.safetensors").resolved
    view = view_params(resolved, "x")
    assert view.image_size == (40, 32) and view.cache_size == (48, 36)  # (H, W), never swapped
    ours = build_transform(view)
    training = eval_transform(resolved["image_size"])  # as training.setup.build_loaders calls it
    assert ours.to_dict() == training.to_dict()
    img = np.random.default_rng(1).integers(0, 256, (48, 36, 3), dtype=np.uint8)
    out = ours(image=img)["image"]
    assert out.shape == (3, 40, 32)
    assert torch.equal(out, training(image=img)["image"])


def test_fold_and_tta_average_equal_manual_average(tmp_path, eval_dir):
    run = make_run(tmp_path / "run")
    out = tmp_path / "sub" / "submission.csv"
    assert main(["--run", str(run), "--data", str(eval_dir), "--out", str(out), "--tta", "hflip",
                 "--batch-size", "3", "--num-workers", "0"]) == 0
    ids = pd.read_csv(eval_dir / "info.csv")["ImageID"].tolist()
    sub = pd.read_csv(out, dtype={"ImageID": str})
    assert list(sub.columns) == ["ImageID", "ans"] and sub["ImageID"].tolist() == ids
    probs = read_probs_frame(tmp_path / "sub" / "submission.probs.csv", ids)
    assert list(probs.columns) == ["ImageID", *PROB_COLUMNS]
    expect = manual_run_probs(run, eval_dir, ids, tta=True)
    for k in ("mask", "gender", "age", "class"):
        np.testing.assert_allclose(probs[[c for c in PROB_COLUMNS if c.startswith(k + "_")]].to_numpy(),
                                   expect[k], atol=1e-5, err_msg=k)
    assert sub["ans"].tolist() == expect["class"].argmax(1).tolist()
    assert len(set(sub["ans"])) > 1  # the check above would be weak if every answer were the same


def test_ensemble_of_multihead_and_single_runs_with_weights(tmp_path, eval_dir):
    a = make_run(tmp_path / "a", head="multihead", folds=(0, 2), seed=1)
    b = make_run(tmp_path / "b", head="single", folds=(1,), image_size=(32, 32), cache_size=(40, 30), seed=2)
    out = tmp_path / "sub.csv"
    assert main(["--run", str(a), "--run", str(b), "--weights", "2", "1", "--data", str(eval_dir),
                 "--out", str(out), "--probs", str(tmp_path / "p.csv"), "--num-workers", "0"]) == 0
    ids = pd.read_csv(eval_dir / "info.csv")["ImageID"].tolist()
    pa, pb = manual_run_probs(a, eval_dir, ids, False), manual_run_probs(b, eval_dir, ids, False)
    expect = {k: (2 * pa[k] + pb[k]) / 3 for k in pa}
    got = read_probs_frame(tmp_path / "p.csv", ids)
    np.testing.assert_allclose(got[[f"class_p{i}" for i in range(18)]].to_numpy(), expect["class"], atol=1e-5)
    np.testing.assert_allclose(got[["age_p0", "age_p1", "age_p2"]].to_numpy(), expect["age"], atol=1e-5)
    assert pd.read_csv(out)["ans"].tolist() == expect["class"].argmax(1).tolist()

    # The same ensemble from the two runs' probability files (predicted separately).
    for name, run in (("a", a), ("b", b)):
        assert main(["--run", str(run), "--data", str(eval_dir), "--out", str(tmp_path / f"{name}.csv"),
                     "--num-workers", "0"]) == 0
    out2 = tmp_path / "from_files.csv"
    assert main(["--run", str(tmp_path / "a.probs.csv"), "--run", str(tmp_path / "b.probs.csv"),
                 "--weights", "2", "1", "--data", str(eval_dir), "--out", str(out2)]) == 0
    assert out2.read_text() == out.read_text()


def test_each_image_is_decoded_once_per_cache_size(tmp_path, eval_dir, monkeypatch):
    import maskds.inference.predict as predict

    calls = []
    monkeypatch.setattr(predict, "cached_pixels",
                        lambda p, size, crop=None: calls.append(size) or cached_pixels(p, size, crop))
    a = make_run(tmp_path / "a", folds=(0, 1), image_size=(40, 32), cache_size=(48, 36))
    b = make_run(tmp_path / "b", folds=(0,), image_size=(24, 24), cache_size=(48, 36))   # same cache size
    c = make_run(tmp_path / "c", folds=(0,), image_size=(40, 32), cache_size=(44, 33))   # another one
    assert main(["--run", str(a), "--run", str(b), "--run", str(c), "--data", str(eval_dir),
                 "--out", str(tmp_path / "s.csv"), "--tta", "hflip", "--num-workers", "0"]) == 0
    assert sorted(calls) == sorted([(48, 36)] * 7 + [(44, 33)] * 7)


def bad_inputs(tmp_path, eval_dir):
    """name -> (argv tweak, expected text in the error)."""
    run = make_run(tmp_path / "run", folds=(0, 1))
    (tmp_path / "empty_run" / "fold0").mkdir(parents=True)
    images = eval_dir / "images"
    return {
        "missing image": (lambda: (images / "a1.jpg").unlink(), [], "a1.jpg: missing"),
        "unreadable image": (lambda: (images / "c7.jpg").write_bytes(b"not a jpeg"), [], "c7.jpg: unreadable"),
        "empty info.csv": (lambda: (eval_dir / "info.csv").write_text(""), [], "info.csv is empty"),
        "info.csv without rows": (lambda: (eval_dir / "info.csv").write_text("ImageID,ans\n"), [], "lists no images"),
        "info.csv without ans": (lambda: (eval_dir / "info.csv").write_text("ImageID\nf3.png\n"), [], "no ans column"),
        "run without weights": (None, ["--run", str(tmp_path / "empty_run")], "holds no fold<k>/best.safetensors"),
        "run that does not exist": (None, ["--run", str(tmp_path / "nope")], "nope does not exist"),
        "fold that does not exist": (None, ["--run", str(run), "--folds", "0", "3"], "no weights for fold 3"),
        "weights count": (None, ["--run", str(run), "--weights", "1", "2"], "2 weight(s) for 1 --run"),
        "truncated image": (lambda: (images / "a0.jpg").write_bytes((images / "a0.jpg").read_bytes()[:-1500]), [],
                            "a0.jpg cannot be decoded"),
        "broken checkpoint": (lambda: (run / "fold1" / "best.safetensors").write_bytes(b"\0" * 64), [],
                              "fold1/best.safetensors is not a safetensors file"),
    }, run


@pytest.mark.parametrize("case", ["missing image", "unreadable image", "empty info.csv", "info.csv without rows",
                                  "info.csv without ans", "run without weights", "run that does not exist",
                                  "fold that does not exist", "weights count", "truncated image",
                                  "broken checkpoint"])
def test_bad_input_gives_its_error_and_no_output(tmp_path, eval_dir, capsys, case):
    cases, run = bad_inputs(tmp_path, eval_dir)
    spoil, argv, expect = cases[case]
    if spoil:
        spoil()
    argv = argv if "--run" in argv and argv.index("--run") == 0 else ["--run", str(run), *argv]
    out = tmp_path / "out" / "submission.csv"
    code = main([*argv, "--data", str(eval_dir), "--out", str(out), "--num-workers", "0"])
    assert code == 2
    assert expect in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_infer_on_a_cpu_without_native_bf16_predicts_in_fp32_and_says_so(tmp_path, eval_dir, monkeypatch, capsys):
    import maskds.core.distributed as distributed
    import maskds.inference.models as models

    run = make_run(tmp_path / "run", folds=(0,))
    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda *a, **k: False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")   # `accelerate launch --config_file cpu.yaml`
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    made, real = [], models.Accelerator
    monkeypatch.setattr(models, "Accelerator", lambda **kw: made.append(kw) or real(**kw))
    assert main(["--run", str(run), "--data", str(eval_dir), "--out", str(tmp_path / "sub.csv"),
                 "--num-workers", "0"]) == 0
    assert [kw["mixed_precision"] for kw in made] == ["no"]
    assert "no native bf16" in capsys.readouterr().out


def test_a_missing_model_is_named_full_never_fold_minus_2(tmp_path, eval_dir, capsys):
    run = make_run(tmp_path / "run", folds=(0,))
    out = tmp_path / "out" / "submission.csv"
    assert main(["--run", str(run), "--folds", "0,full", "--data", str(eval_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.replace(str(run), "RUN")   # tmp_path itself may hold a "-2"
    assert "no weights for full; it has fold 0" in err and "-2" not in err
    (run / "fold0").rename(run / "full")   # a run trained with folds=full only
    assert main(["--run", str(run), "--folds", "1", "--data", str(eval_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.replace(str(run), "RUN")
    assert "no weights for fold 1; it has full" in err and "-2" not in err
    assert not (tmp_path / "out").exists()
