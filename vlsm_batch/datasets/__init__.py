"""Dataset catalog: names, on-disk layouts, splits, prompt source and domains (no I/O, no torch).

Roots come from the spec's ``data_root`` (or ``VLSM_DATA``); a dataset lives in ``<data_root>/<folder>``.
Layouts (readers in ``readers.py``, docs/science.md §7):

- ``medvlsm``: ``images/``, ``masks/``, ``anns/{train,val,test}.json`` (a list of ``{img_name, mask_name,
  prompts: {p0, p1, ...}}``; a prompt is a string or a list of strings).
- ``camus``: the medvlsm annotation files, but images and masks in per-split folders: train and val read
  ``images/train`` + ``masks/train``, test reads ``images/test`` + ``masks/test``; ``mask_name`` is
  ``mask_{1,2,3}/<stem>_gt.png`` (1 = LV cavity, 2 = myocardium, 3 = left atrium).
- ``chexlocalize``: the medvlsm layout, one sample per (image, pathology); the mask is named
  ``<image stem>_<pathology_snake_case>.png`` and the reader checks that name against the 10 pathologies.
- ``image_dir`` (natural datasets, written by ``vlsm-batch data prepare``): ``images/<split>/<id>.<jpg|png>`` and
  ``annotations/<split>/<class>/<id>.png`` with ``<split>`` in training/validation/test; the prompt is the class
  (folder) name; ``prepared.json`` records the counts.

Every name a dataset file lists stays inside its folder (``paths.py``); a mask must have its image's size unless
the dataset declares ``resize_masks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..registry import Registry

LAYOUTS = ("medvlsm", "camus", "chexlocalize", "image_dir")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str  # sub-folder of data_root
    layout: str  # one of LAYOUTS
    domain: str  # "medical" | "natural"
    modality: str
    split_counts: tuple[int, int, int] | None  # expected train/val/test samples (None: depends on preparation)
    prompt_key: str = "p1"  # annotation prompt key (medvlsm-style layouts); image_dir uses the class name
    description: str = ""
    implemented: bool = True  # False: this build has no loader for the layout yet
    generated: bool = False  # True: written by vlsm-batch itself when missing (synthetic)
    prompt_source: str = "annotation"  # "annotation" (anns/*.json prompts[prompt_key]) | "class_name" | "fixed"
    fixed_prompt: str | None = None  # prompt_source "fixed": every sample gets this prompt
    prepare: str | None = None  # name of the `vlsm-batch data prepare` recipe that writes this dataset
    # True only for a dataset known to ship masks at another resolution than their images: such a mask is resized
    # (nearest) to its image. False (every catalog dataset): a size mismatch is refused, naming both files.
    resize_masks: bool = False


DATASETS: Registry[DatasetInfo] = Registry("dataset")

_MEDVLSM = [
    ("kvasir_polyp", "endoscopy", (800, 100, 100), "Kvasir-SEG polyps (JPEG masks)"),
    ("clinicdb_polyp", "endoscopy", (490, 61, 61), "CVC-ClinicDB polyps"),
    ("bkai_polyp", "endoscopy", (800, 100, 100), "BKAI-IGH NeoPolyp (negated prompts for empty masks)"),
    ("isic", "dermoscopy", (810, 90, 379), "ISIC 2016 skin lesions"),
    ("dfu", "photo", (1600, 200, 200), "DFUC 2022 foot ulcers"),
    ("busi", "ultrasound", (624, 78, 78), "Breast ultrasound (negated prompts for normal images)"),
]
for _name, _mod, _counts, _desc in _MEDVLSM:
    DATASETS.register(_name, DatasetInfo(_name, _name, "medvlsm", "medical", _mod, _counts, description=_desc))

DATASETS.register(
    "chexlocalize",
    DatasetInfo(
        "chexlocalize",
        "chexlocalize",
        "chexlocalize",
        "medical",
        "chest x-ray",
        (1279, 446, 452),
        description="CheXlocalize, one sample per image x pathology (10 pathologies)",
    ),
)
DATASETS.register(
    "camus",
    DatasetInfo(
        "camus",
        "camus",
        "camus",
        "medical",
        "ultrasound",
        # train: 400 patients x 4 images x 3 structures in the medvlsm release is not confirmed (reference: [NF]);
        # val and test are 200 images x 3 structures each. None = not checked (verify reports the counts found).
        None,
        description="CAMUS echocardiography, 3 structures (LV cavity, myocardium, left atrium)",
    ),
)
DATASETS.register(
    "voc2012",
    DatasetInfo(
        "voc2012",
        "voc2012",
        "image_dir",
        "natural",
        "photo",
        None,  # depends on preparation; verify checks prepared.json
        description="PASCAL VOC 2012, one binary mask per image x class (vlsm-batch data prepare voc2012)",
        prompt_source="class_name",
        prepare="voc2012",
    ),
)
DATASETS.register(
    "cityscapes",
    DatasetInfo(
        "cityscapes",
        "cityscapes",
        "image_dir",
        "natural",
        "street scene",
        None,
        description="Cityscapes, 19 evaluation classes by labelId (vlsm-batch data prepare cityscapes)",
        prompt_source="class_name",
        prepare="cityscapes",
    ),
)
DATASETS.register(
    "synthetic",
    DatasetInfo(
        "synthetic",
        "synthetic",
        "medvlsm",
        "medical",
        "synthetic",
        (48, 16, 16),
        description="generated shapes in the real medvlsm layout (tests, quickstart)",
        generated=True,
    ),
)


def custom_dataset_info(definition: dict[str, Any]) -> DatasetInfo:
    """A ``DatasetInfo`` for a dataset declared in a spec (``folder`` is its absolute path, so that
    ``data_root / folder`` is that path)."""
    prompt = definition.get("prompt")
    source = "fixed" if prompt else ("class_name" if definition["layout"] == "image_dir" else "annotation")
    return DatasetInfo(
        name=definition["name"],
        folder=str(definition["path"]),
        layout=definition["layout"],
        domain=definition["domain"],
        modality=definition.get("modality") or "unknown",
        split_counts=None,
        prompt_key=definition.get("prompt_key") or "p1",
        description="declared in the study spec",
        prompt_source=source,
        fixed_prompt=prompt,
        resize_masks=bool(definition.get("resize_masks", False)),
    )


def get_dataset(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)
