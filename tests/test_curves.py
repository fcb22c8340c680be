"""Training-curve plot: drawn from metrics.jsonl lines as train.py writes them."""
import json

from PIL import Image

from maskds.training.curves import plot_curves


def _line(epoch, f1, best):
    scores = {"loss": 1.0 / (epoch + 1), "macro_f1": f1, "mask_f1": f1, "gender_f1": f1, "age_f1": f1,
              "accuracy": f1, "n": 10}
    return {"epoch": epoch, "train_loss": 2.0 / (epoch + 1), "raw": scores, "ema": scores, "best": best}


def test_curves_png_is_written_from_the_metrics_lines(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(_line(e, f, b)) + "\n" for e, f, b in [(0, 0.4, True), (1, 0.7, True), (2, 0.6, False)]))
    out = plot_curves(metrics, tmp_path / "curves.png")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 400
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically
