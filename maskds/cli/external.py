"""`maskds import-faces` and `maskds pseudo`: the subcommands that bring faces from elsewhere in (an `--extra`
folder from a face set; labels guessed by a run). Part of `maskds.cli.main`, which registers them."""
from __future__ import annotations

import argparse
from pathlib import Path

from maskds.core.errors import UserError


def _import_faces(a: argparse.Namespace) -> int:
    from maskds.external.face_sources import CsvColumns
    from maskds.external.import_faces import ImportOptions, import_faces

    # a set given on the command line replaces its own default only (None: CsvColumns' default)
    given = {k: v for k, v in (("male", a.male), ("female", a.female)) if v is not None}
    cols = CsvColumns(a.labels, a.image_col, a.age_col, a.gender_col, **given)
    opt = ImportOptions(frame=a.frame, draw_masks=a.draw_masks, mask_state=a.mask_state, seed=a.seed)
    import_faces(a.src, a.out, a.format, cols, opt, min_age=a.min_age, limit=a.limit, num_proc=a.num_proc,
                 preview=a.preview)
    return 0


def _pseudo(a: argparse.Namespace) -> int:
    if a.faces is not None:  # a folder of faces -> an --extra folder
        if a.run is None or len(a.paths) != 1:
            raise UserError("pseudo --faces DIR needs --run RUN and one OUT folder: "
                            "maskds pseudo --faces DIR --run RUN OUT --min-prob P")
        from maskds.external.pseudo_faces import pseudo_faces

        heads = a.heads if a.heads is not None else "gender,age"
        pseudo_faces(a.faces, a.run, Path(a.paths[0]), [h.strip() for h in heads.split(",") if h.strip()],
                     a.min_prob, a.tta if a.tta is not None else "hflip")
        return 0
    if len(a.paths) != 4 or a.run is not None:
        raise UserError("pseudo takes PROBS_CSV DATA/eval CACHE OUT_CACHE (eval images into a cache copy), or "
                        "--faces DIR --run RUN OUT (a folder of faces into an --extra folder)")
    given = [f"--{k}" for k in ("heads", "tta") if getattr(a, k) is not None]
    if given:
        raise UserError(f"pseudo: {' and '.join(given)} only apply with --faces; the PROBS_CSV form takes the "
                        "probabilities infer.py already wrote (its TTA, the 18-class decision)")
    from maskds.external.pseudo import make_pseudo_cache

    probs, data, cache, out = map(Path, a.paths)
    make_pseudo_cache(probs, data, cache, out, a.min_prob)
    return 0


def add_import_faces(sub) -> None:
    from maskds.external.face_sources import FORMATS

    i = sub.add_parser("import-faces", help="a face set from elsewhere (UTKFace, AFAD, FairFace, a CSV) to an "
                       "--extra folder",
                       description="Read the faces of SRC with their ages and genders and write OUT, a folder for "
                       "`maskds build --extra OUT`: OUT/labels.csv and OUT/images/. Each face is framed as the "
                       "competition's 384x512 chest-up photo (its face where --face-crop fixed crops; see --frame), alone "
                       "(labelled not worn) or, with --draw-masks, as a person's seven photos with masks drawn "
                       "from MTCNN's landmarks. Problems of SRC are reported all at once; nothing is written then.",
                       epilog="formats: utkface ([age]_[gender]_[race]_[date].jpg.chip.jpg, gender 0 male / 1 "
                       "female), afad (<age>/<111|112>/<name>.jpg, 111 male), fairface (its CSV: file,age,gender "
                       "with ranges like 20-29 and 'more than 70'), csv (your CSV: --labels, --image-col, "
                       "--age-col, --gender-col, --male, --female). Ages stay as recorded (75 stays 75).")
    i.add_argument("src", type=Path, metavar="SRC", help="the face set's folder")
    i.add_argument("out", type=Path, metavar="OUT", help="folder to write (must not exist or be empty)")
    i.add_argument("--format", required=True, choices=FORMATS, help="how SRC records ages and genders")
    i.add_argument("--labels", type=Path, default=None, metavar="CSV",
                   help="fairface/csv: the labels CSV (default: the one CSV file at the top of SRC)")
    i.add_argument("--image-col", default="image", help="csv: column of image paths, relative to SRC (default image)")
    i.add_argument("--age-col", default="age", help="csv: column of ages, whole years or ranges (default age)")
    i.add_argument("--gender-col", default="gender", help="csv: column of genders (default gender)")
    i.add_argument("--male", nargs="+", default=None, metavar="V",
                   help="csv: values meaning male, any case (default: male m 0); given, it replaces this default only")
    i.add_argument("--female", nargs="+", default=None, metavar="V",
                   help="csv: values meaning female, any case (default: female f 1); no value may be in both sets")
    i.add_argument("--draw-masks", action="store_true",
                   help="seven photos per face: 5 masks worn, 1 worn incorrectly (nose out or under the chin), "
                   "1 without; faces where MTCNN finds no landmarks are skipped and listed in OUT/skipped.txt")
    i.add_argument("--frame", default="portrait", choices=["portrait", "crop", "none"],
                   help="portrait (default): place each face as a chest-up photo; crop: keep the face crop as it "
                   "is, marked so that build only fits it to the cache's shape; none: keep the photo as it is")
    i.add_argument("--mask-state", default="not_wear", choices=["not_wear", "unknown"],
                   help="without --draw-masks, the mask label of each photo (default not_wear: bare faces)")
    i.add_argument("--min-age", type=int, default=0, help="leave out faces younger than this (default 0)")
    i.add_argument("--limit", type=int, default=None, metavar="N", help="import N faces drawn at random (default all)")
    i.add_argument("--seed", type=int, default=0, help="seed of the draw, the masks and the framing (default 0)")
    i.add_argument("--num-proc", type=int, default=None, help="worker processes (default: CPU count)")
    i.add_argument("--preview", type=Path, default=None, metavar="PNG", help="write a grid of examples to look at")
    i.set_defaults(func=_import_faces)


def add_pseudo(sub) -> None:
    s = sub.add_parser("pseudo", help="pseudo labels: confident eval images into a cache copy, or any folder of "
                       "faces labelled by a run into an --extra folder",
                       usage="maskds pseudo PROBS_CSV DATA/eval CACHE OUT_CACHE --min-prob P\n"
                       "       maskds pseudo --faces DIR --run RUN OUT --min-prob P [--heads gender,age]",
                       description="Eval images whose largest class probability (in a probabilities file "
                       "written by infer.py) is at least --min-prob become training rows of OUT_CACHE, a "
                       "copy of CACHE: labels from that class (age band only), in a fold that never "
                       "validates, marked pseudo (train.py weighs them with pseudo_weight). CACHE is untouched. "
                       "With --faces: every image of DIR (an --extra folder, e.g. from `maskds import-faces "
                       "--format folder`, or any folder of images) is predicted by RUN's folds and the --heads "
                       "it has no label for are filled where the run's probability reaches --min-prob; OUT is "
                       "an --extra folder (labels.csv + images).")
    s.add_argument("paths", nargs="+", metavar="PATHS",
                   help="PROBS_CSV DATA/eval CACHE OUT_CACHE, or with --faces the OUT folder")
    s.add_argument("--faces", type=Path, default=None, metavar="DIR", help="a folder of faces to label")
    s.add_argument("--run", type=Path, default=None, metavar="RUN", help="with --faces: the run that labels them")
    s.add_argument("--heads", default=None, metavar="HEADS",
                   help="with --faces: the heads to guess, comma-separated of mask, gender, age (default gender,age)")
    s.add_argument("--tta", default=None, help="with --faces: test-time augmentation as infer.py's (default hflip)")
    s.add_argument("--min-prob", type=float, required=True, metavar="P",
                   help="least class probability an image needs, in (0, 1] (e.g. 0.9)")
    s.set_defaults(func=_pseudo)
