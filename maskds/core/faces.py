"""Face crops (`maskds build --face-crop`): the face found once per photo, cropped with a margin to the
cache's shape, the same way at build and at inference.

`mtcnn`: facenet-pytorch's MTCNN (its weights ship in the PyPI package: nothing is downloaded), run on
a copy of the photo scaled to DETECT_SIDE pixels on its longer side; the most confident face is kept.
`fixed`: no detector, the upper-centre box where a chest-up portrait's face is (FIXED_BOX, fractions of
a 3:4 portrait, placed in the photo's largest centred 3:4 window, so a landscape or square photo gets a
face-shaped box too); also what `mtcnn` falls back to when it finds no face. Either way the crop is the
box widened by a margin on each side (a fraction of the box, MARGIN by default), then extended to the
cache's height:width ratio about the box's centre; what falls outside the photo is black.
`face` (FACE_IMAGE, only for `--extra` rows marked `framing: face`, such as `maskds import-faces --frame crop`
writes): the image already is an aligned face crop; it is only cut to the cache's height:width ratio (its
largest centred window, nothing black) before the resize.
"""
from __future__ import annotations

import threading

import numpy as np
from PIL import Image

CROP_METHODS = ("none", "fixed", "mtcnn")
FACE_IMAGE = "face"  # the crop of an image that already is a face crop (an `--extra` row marked `framing: face`)
FIXED_BOX = (0.18, 0.17, 0.82, 0.64)  # x0, y0, x1, y1 as fractions of a 3:4 portrait: its face
PORTRAIT_W_H = 3 / 4                   # the shape FIXED_BOX was measured on (the competition's 384x512)
# The rule that places FIXED_BOX, recorded in a face-cropped cache's build arguments (`face_box_rule`): a cache
# cut by another rule holds other crops than inference cuts now. 1: FIXED_BOX on the whole photo; 2: on its
# largest centred 3:4 window (`fixed_box`). Change it with any change to where a fixed box falls.
FIXED_BOX_RULE = 2
MARGIN = 0.15                          # added on each side, as a fraction of the box's width/height
DETECT_SIDE = 320                      # the detector sees the photo scaled to this longer side
MIN_FACE = 40                          # smallest face the detector looks for, at DETECT_SIDE (pixels)

_detector = None
_lock = threading.Lock()


def _mtcnn():
    """One MTCNN per process (loader workers and build workers each build their own), on the CPU."""
    global _detector
    with _lock:
        if _detector is None:
            import multiprocessing

            import torch
            from facenet_pytorch import MTCNN

            if multiprocessing.parent_process() is not None:  # a build worker: the workers are the parallelism
                torch.set_num_threads(1)
            _detector = MTCNN(keep_all=False, select_largest=False, min_face_size=MIN_FACE, device="cpu")
    return _detector


def detect(img: Image.Image) -> tuple[float, float, float, float] | None:
    """The most confident face's box (x0, y0, x1, y1) in the photo's pixels, or None."""
    import torch

    scale = DETECT_SIDE / max(img.size)
    small = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    try:
        with torch.inference_mode():
            boxes, probs = _mtcnn().detect(small)
    except (ValueError, RuntimeError):  # MTCNN has no scale for a photo this narrow (ratio over ~8:1)
        return None
    if boxes is None or len(boxes) == 0:
        return None
    x0, y0, x1, y1 = (float(v) / scale for v in boxes[int(np.argmax(probs))])
    return x0, y0, x1, y1


def fixed_box(img: Image.Image) -> tuple[float, float, float, float]:
    """FIXED_BOX in the photo's pixels, within its largest centred 3:4 window (the whole of a 3:4 photo):
    applied to a 512x384 photo's whole frame, the box was as wide as a face is tall and 32% of the crop
    fell outside the photo."""
    w, h = img.size
    ww, wh = min(w, h * PORTRAIT_W_H), min(h, w / PORTRAIT_W_H)
    left, top = (w - ww) / 2, (h - wh) / 2
    return (left + FIXED_BOX[0] * ww, top + FIXED_BOX[1] * wh, left + FIXED_BOX[2] * ww, top + FIXED_BOX[3] * wh)


def crop_region(box, size_hw: tuple[int, int], margin: float = MARGIN) -> tuple[int, int, int, int]:
    """The crop (left, top, right, bottom) around a face box: `margin` on each side, then the smallest
    region of the cache's height:width ratio that holds it, centred on the box."""
    x0, y0, x1, y1 = box
    bw, bh = (x1 - x0) * (1 + 2 * margin), (y1 - y0) * (1 + 2 * margin)
    ratio = size_hw[0] / size_hw[1]  # height / width
    w = max(bw, bh / ratio)
    h = w * ratio
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return round(cx - w / 2), round(cy - h / 2), round(cx + w / 2), round(cy + h / 2)


def centre_window(size_wh: tuple[int, int], size_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred region (left, top, right, bottom) of a (width, height) image with the cache's
    height:width ratio."""
    w, h = size_wh
    ratio = size_hw[0] / size_hw[1]  # height / width
    cw, ch = min(w, h / ratio), min(h, w * ratio)
    left, top = round((w - cw) / 2), round((h - ch) / 2)
    return left, top, left + round(cw), top + round(ch)


def face_crop(img: Image.Image, method: str, size_hw: tuple[int, int],
              margin: float = MARGIN) -> tuple[Image.Image, list[float], bool]:
    """(the crop, its face box as fractions of the photo, whether a detector found it) of an upright photo."""
    if method == FACE_IMAGE:
        return img.crop(centre_window(img.size, size_hw)), [0.0, 0.0, 1.0, 1.0], True
    if method not in CROP_METHODS[1:]:
        raise ValueError(f"face crop must be one of {CROP_METHODS[1:]}, got {method!r}")
    box = detect(img) if method == "mtcnn" else None
    found = box is not None
    box = box if found else fixed_box(img)
    w, h = img.size
    relative = [box[0] / w, box[1] / h, box[2] / w, box[3] / h]
    return img.crop(crop_region(box, size_hw, margin)), relative, found


def landmarks(img: Image.Image) -> np.ndarray | None:
    """MTCNN's five points of the most confident face, [5, 2] pixels (x, y) of the photo: left eye, right
    eye, nose, left and right mouth corners (as seen); None where no face is found."""
    import torch

    try:
        with torch.inference_mode():
            boxes, probs, points = _mtcnn().detect(img, landmarks=True)
    except (ValueError, RuntimeError):
        return None
    if boxes is None or len(boxes) == 0 or points is None:
        return None
    return np.asarray(points[int(np.argmax(probs))], dtype=np.float32)
