"""Dataset catalog: names, on-disk layouts, splits and domains (no I/O, no torch).

Roots come from the spec's ``data_root`` (or ``VLSM_DATA``); a dataset lives in ``<data_root>/<folder>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str  # sub-folder of data_root
    layout: str  # "medvlsm" (images/, masks/, anns/{train,val,test}.json) | "camus" | "image_dir"
    domain: str  # "medical" | "natural"
    modality: str
    split_counts: tuple[int, int, int] | None  # expected train/val/test samples (None: depends on preparation)
    prompt_key: str = "p1"
    description: str = ""
    implemented: bool = True  # False: this build has no loader for the layout yet
    generated: bool = False  # True: written by vlsm-batch itself when missing (synthetic)


DATASETS: Registry[DatasetInfo] = Registry("dataset")

_MEDVLSM = [
    ("kvasir_polyp", "endoscopy", (800, 100, 100), "Kvasir-SEG polyps"),
    ("clinicdb_polyp", "endoscopy", (490, 61, 61), "CVC-ClinicDB polyps"),
    ("bkai_polyp", "endoscopy", (800, 100, 100), "BKAI-IGH NeoPolyp (negated prompts for empty masks)"),
    ("isic", "dermoscopy", (810, 90, 379), "ISIC 2016 skin lesions"),
    ("dfu", "photo", (1600, 200, 200), "DFUC 2022 foot ulcers"),
    ("busi", "ultrasound", (624, 78, 78), "Breast ultrasound (negated prompts for normal images)"),
    ("chexlocalize", "chest x-ray", (1279, 446, 452), "CheXlocalize, one sample per image x pathology"),
]
for _name, _mod, _counts, _desc in _MEDVLSM:
    DATASETS.register(_name, DatasetInfo(_name, _name, "medvlsm", "medical", _mod, _counts, description=_desc))

DATASETS.register(
    "camus",
    DatasetInfo(
        "camus",
        "camus",
        "camus",
        "medical",
        "ultrasound",
        None,
        description="CAMUS echocardiography, 3 structures",
        implemented=False,
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
        None,
        description="PASCAL VOC 2012, one binary mask per image x class",
        implemented=False,
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
        description="Cityscapes, 19 evaluation classes by labelId",
        implemented=False,
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


def get_dataset(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)
