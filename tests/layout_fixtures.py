"""Writers of tiny data folders in the published layouts (headers, id formats, empty cells,
"unknown" values, `_downsampled` ids, tfrecord -1 markers), with small JPEGs from cv2."""

from pathlib import Path

import cv2
import numpy as np

TRAIN_HEADER = (
    "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,"
    "diagnosis,benign_malignant,target"
)
TEST_HEADER = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge"
RESIZED = ",tfrecord,width,height"

COMPETITION_TRAIN = [
    "ISIC_2637011,IP_7279968,male,45.0,head/neck,unknown,benign,0",
    "ISIC_0015719,IP_3075186,female,45.0,upper extremity,unknown,benign,0",
    "ISIC_0052212,IP_2842074,female,50.0,lower extremity,nevus,benign,0",
    "ISIC_0068279,IP_6890425,,,,unknown,benign,0",
    "ISIC_0074268,IP_8723313,female,55.0,upper extremity,melanoma,malignant,1",
    "ISIC_0074311,IP_2950485,female,0.0,lower extremity,unknown,benign,0",
]
COMPETITION_TEST = [
    "ISIC_0052060,IP_3579794,male,70.0,",
    "ISIC_0052349,IP_7782715,male,40.0,lower extremity",
    "ISIC_0058510,IP_7960270,female,55.0,torso",
]
# tfrecord, width, height of each training row of the resized 2020 set; -1: a duplicate.
RESIZED_TRAIN_EXTRA = [
    "0,6000,4000",
    "0,6000,4000",
    "6,1872,1053",
    "-1,1872,1053",
    "2,6000,4000",
    "9,640,480",
]
RESIZED_TEST_EXTRA = ["8,6000,4000", "3,6000,4000", "5,1872,1053"]
# seeds of the generated extra rows' images, apart from every fixed row's seeds
EXTRA_SEED = 1000


def extra_train_rows(n: int) -> list[str]:
    """``n`` generated competition training rows, one patient each, every third malignant:
    enough positives for every fold of a smoke run."""
    sites = ["torso", "lower extremity", "upper extremity", "head/neck"]
    rows = []
    for i in range(n):
        malignant = i % 3 == 0
        rows.append(
            f"ISIC_{9000000 + i},IP_{9000000 + i},{'female' if i % 2 else 'male'},"
            f"{30 + 5 * (i % 9)}.0,{sites[i % 4]},{'melanoma' if malignant else 'unknown'},"
            f"{'malignant' if malignant else 'benign'},{int(malignant)}"
        )
    return rows


def jpeg(path: Path, seed: int, size: int = 24) -> Path:
    """A tiny JPEG with random pixels: different seeds give different bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (size, size + 8, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _names(rows: list[str]) -> list[str]:
    return [r.split(",")[0] for r in rows]


def _images(folder: Path, names: list[str], seed: int) -> None:
    for i, name in enumerate(names):
        jpeg(folder / f"{name}.jpg", seed + i)


def write_sample_submission(path: Path) -> Path:
    """The competition's sample_submission.csv for the test rows of these fixtures."""
    return _csv(path, "image_name,target", [f"{n},0" for n in _names(COMPETITION_TEST)])


def _sample_submission(root: Path) -> None:
    write_sample_submission(root / "sample_submission.csv")


def write_kaggle2020(root: Path, with_dicom: bool = True, n_extra: int = 0) -> Path:
    """The competition download: train/test/sample_submission CSVs, jpeg/{train,test}/,
    and (as in the archive) DICOM files in train/ and test/; ``n_extra`` generated
    training rows (:func:`extra_train_rows`) after the fixed ones."""
    extra = extra_train_rows(n_extra)
    _csv(root / "train.csv", TRAIN_HEADER, COMPETITION_TRAIN + extra)
    _csv(root / "test.csv", TEST_HEADER, COMPETITION_TEST)
    _sample_submission(root)
    _images(root / "jpeg" / "train", _names(COMPETITION_TRAIN), 0)
    _images(root / "jpeg" / "train", _names(extra), EXTRA_SEED)
    _images(root / "jpeg" / "test", _names(COMPETITION_TEST), 50)
    if with_dicom:
        _dicom(root, "train", _names(COMPETITION_TRAIN + extra))
        _dicom(root, "test", _names(COMPETITION_TEST))
    return root


def _dicom(root: Path, split: str, names: list[str]) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / split / f"{name}.dcm").write_bytes(b"\0" * 128 + b"DICM")


def write_dicom_only(root: Path) -> Path:
    """The competition CSVs with DICOM images only (train/*.dcm, test/*.dcm, no jpeg/)."""
    _csv(root / "train.csv", TRAIN_HEADER, COMPETITION_TRAIN)
    _csv(root / "test.csv", TEST_HEADER, COMPETITION_TEST)
    _sample_submission(root)
    _dicom(root, "train", _names(COMPETITION_TRAIN))
    _dicom(root, "test", _names(COMPETITION_TEST))
    return root


def write_resized2020(root: Path, n_extra: int = 0, sample_submission: bool = True) -> Path:
    """Chris Deotte's jpeg-melanoma-NxN: the 2020 CSVs + tfrecord,width,height; train/, test/;
    ``n_extra`` generated training rows; without ``sample_submission``, as the set ships."""
    extra = extra_train_rows(n_extra)
    rows = [f"{r},{e}" for r, e in zip(COMPETITION_TRAIN, RESIZED_TRAIN_EXTRA)]
    rows += [f"{r},{i % 16},6000,4000" for i, r in enumerate(extra)]
    _csv(root / "train.csv", TRAIN_HEADER + RESIZED, rows)
    test = [f"{r},{e}" for r, e in zip(COMPETITION_TEST, RESIZED_TEST_EXTRA)]
    _csv(root / "test.csv", TEST_HEADER + RESIZED, test)
    if sample_submission:
        _sample_submission(root)
    _images(root / "train", _names(COMPETITION_TRAIN), 0)
    _images(root / "train", _names(extra), EXTRA_SEED)
    _images(root / "test", _names(COMPETITION_TEST), 50)
    return root


RESIZED2019_TRAIN = [
    "ISIC_0000000,-1,female,55.0,anterior torso,NV,benign,0,4,1022,767",
    "ISIC_0000002,-1,female,60.0,upper extremity,MEL,malignant,1,12,1022,767",
    "ISIC_0000004_downsampled,-1,male,80.0,posterior torso,MEL,malignant,1,3,1024,768",
    "ISIC_0010491,-1,,,,BKL,benign,0,7,1024,768",
    "ISIC_0024306,-1,male,45.0,lateral torso,NV,benign,0,-1,600,450",
]


def write_resized2019(folder: Path) -> Path:
    """Chris Deotte's jpeg-isic2019-NxN: 2019 rows in the 2020 columns + tfrecord,width,height,
    patient_id -1, one tfrecord -1 duplicate, images in train/."""
    _csv(folder / "train.csv", TRAIN_HEADER + RESIZED, RESIZED2019_TRAIN)
    _images(folder / "train", _names(RESIZED2019_TRAIN), 100)
    return folder


ISIC2019_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
ISIC2019_ROWS = [  # image, class, age, site, lesion_id, sex
    ("ISIC_0000000", "NV", "55.0", "anterior torso", "", "female"),
    ("ISIC_0000002", "MEL", "60.0", "upper extremity", "", "female"),
    ("ISIC_0000004_downsampled", "MEL", "80.0", "posterior torso", "MSK4_0011169", "male"),
    ("ISIC_0053454", "SCC", "", "", "BCN_0003925", ""),
]


def write_isic2019(folder: Path) -> Path:
    """The official ISIC 2019 training download (ground truth, metadata, input folder)."""
    gt = [
        f"{r[0]}," + ",".join("1.0" if c == r[1] else "0.0" for c in ISIC2019_CLASSES)
        for r in ISIC2019_ROWS
    ]
    _csv(folder / "ISIC_2019_Training_GroundTruth.csv", "image," + ",".join(ISIC2019_CLASSES), gt)
    meta = [f"{r[0]},{r[2]},{r[3]},{r[4]},{r[5]}" for r in ISIC2019_ROWS]
    _csv(
        folder / "ISIC_2019_Training_Metadata.csv",
        "image,age_approx,anatom_site_general,lesion_id,sex",
        meta,
    )
    _images(folder / "ISIC_2019_Training_Input", [r[0] for r in ISIC2019_ROWS], 200)
    return folder


ISIC2018_CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
ISIC2018_ROWS = [  # image, class, lesion_id
    ("ISIC_0024306", "NV", "HAM_0000550"),
    ("ISIC_0024307", "NV", "HAM_0003577"),
    ("ISIC_0024310", "MEL", "HAM_0000949"),
    ("ISIC_0024311", "MEL", "HAM_0000949"),
    ("ISIC_0024318", "DF", "HAM_0001088"),
    ("ISIC_0024329", "AKIEC", "HAM_0002954"),
]


def write_isic2018_task3(folder: Path, groupings: bool = True) -> Path:
    """The ISIC 2018 challenge Task 3 training download: ground truth folder, input folder
    (with its LICENSE and ATTRIBUTION files) and, optionally, the lesion groupings."""
    gt = [
        f"{r[0]}," + ",".join("1.0" if c == r[1] else "0.0" for c in ISIC2018_CLASSES)
        for r in ISIC2018_ROWS
    ]
    gt_dir = folder / "ISIC2018_Task3_Training_GroundTruth"
    _csv(
        gt_dir / "ISIC2018_Task3_Training_GroundTruth.csv",
        "image," + ",".join(ISIC2018_CLASSES),
        gt,
    )
    (gt_dir / "LICENSE.txt").write_text("license\n")
    inputs = folder / "ISIC2018_Task3_Training_Input"
    _images(inputs, [r[0] for r in ISIC2018_ROWS], 300)
    (inputs / "ATTRIBUTION.txt").write_text("attribution\n")
    if groupings:
        rows = [f"{r[0]},{r[2]},histopathology" for r in ISIC2018_ROWS]
        rows[0] = rows[0].replace("histopathology", "serial imaging showing no change")
        _csv(
            folder / "ISIC2018_Task3_Training_LesionGroupings.csv",
            "image,lesion_id,diagnosis_confirm_type",
            rows,
        )
    return folder


HAM_ROWS = [
    "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp",
    "HAM_0002730,ISIC_0026769,mel,histo,,unknown,back",
    "HAM_0001466,ISIC_0031633,nv,follow_up,75.0,female,unknown",
]


def write_ham10000(folder: Path) -> Path:
    """The Kaggle/Dataverse HAM10000 copy: metadata CSV and two image part folders."""
    _csv(
        folder / "HAM10000_metadata.csv",
        "lesion_id,image_id,dx,dx_type,age,sex,localization",
        HAM_ROWS,
    )
    names = [r.split(",")[1] for r in HAM_ROWS]
    _images(folder / "HAM10000_images_part_1", names[:2], 400)
    _images(folder / "HAM10000_images_part_2", names[2:], 410)
    return folder


ISIC2017_ROWS = ["ISIC_0000000,0.0,0.0", "ISIC_0000001,1.0,0.0", "ISIC_0000003,0.0,1.0"]


def write_isic2017(folder: Path) -> Path:
    """ISIC 2017 Part 3 training: ground truth (0.0/1.0), images with their superpixel PNGs,
    metadata with "unknown" age and sex."""
    _csv(
        folder / "ISIC-2017_Training_Part3_GroundTruth.csv",
        "image_id,melanoma,seborrheic_keratosis",
        ISIC2017_ROWS,
    )
    data = folder / "ISIC-2017_Training_Data"
    names = _names(ISIC2017_ROWS)
    _images(data, names, 500)
    for i, name in enumerate(names):
        img = np.random.default_rng(600 + i).integers(0, 255, (24, 32, 3), dtype=np.uint8)
        assert cv2.imwrite(str(data / f"{name}_superpixels.png"), img)
    _csv(
        data / "ISIC-2017_Training_Data_metadata.csv",
        "image_id,age_approximate,sex",
        ["ISIC_0000000,55,female", "ISIC_0000001,unknown,unknown", "ISIC_0000003,40,male"],
    )
    return folder


MALIGNANT_ROWS = [
    "ISIC_0075914,,male,60.0,torso,melanoma,malignant,1",
    "ISIC_0076262,IP_1234567,female,,lower extremity,,malignant,1",
]


def write_malignant(folder: Path) -> Path:
    """The extra malignant set: malignant.csv in the 2020 columns, images in jpeg/."""
    _csv(folder / "malignant.csv", TRAIN_HEADER, MALIGNANT_ROWS)
    _images(folder / "jpeg", _names(MALIGNANT_ROWS), 700)
    return folder


# Chris Deotte's malignant-v2-NxN: three tables in the resized 2020 columns. Which table holds
# which source is not known: the rows are spread over them, with a copy of a competition row
# (ISIC_0074268), patient_id -1, empty and "unknown" cells, a `_downsampled` id, and the even
# tfrecords 30..58 the 2017/18 rows carry.
MALIGNANT_V2_TABLES = {
    "train_malig_1.csv": [
        "ISIC_0074268,IP_8723313,female,55.0,upper extremity,melanoma,malignant,1,2,6000,4000",
        "ISIC_0149568,IP_0962375,female,55.0,upper extremity,melanoma,malignant,1,7,6000,4000",
    ],
    "train_malig_2.csv": [
        "ISIC_0000013,-1,female,30.0,,melanoma,malignant,1,30,1022,767",
        "ISIC_0000031,-1,male,,,,malignant,1,58,1022,767",
    ],
    "train_malig_3.csv": [
        "ISIC_0000004_downsampled,-1,male,80.0,posterior torso,MEL,malignant,1,44,1024,768",
        "ISIC_0010491,-1,unknown,,unknown,MEL,malignant,1,46,1024,768",
    ],
}


def write_malignant_v2(folder: Path, tables: tuple[str, ...] = tuple(MALIGNANT_V2_TABLES)) -> Path:
    """malignant-v2-NxN with the named ``tables`` (default all three); the images of the last
    table in a sub-folder of the others' (any folder below is searched)."""
    for table in tables:
        rows = MALIGNANT_V2_TABLES[table]
        _csv(folder / table, TRAIN_HEADER + RESIZED, rows)
        images = folder / "jpeg" / ("more" if table == "train_malig_3.csv" else "")
        _images(images, _names(rows), 800 + 10 * list(MALIGNANT_V2_TABLES).index(table))
    return folder
