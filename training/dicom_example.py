"""Write the gallery's DICOM example: a held-out BrEaST scan as an ultrasound DICOM file carrying the
dataset's own pixel size, so the demo can show lesion sizes in millimetres on a real calibration.

    python -m training.dicom_example [--case breast_case010]

BrEaST's manifest gives each scan's pixel size in cm (the scanners' calibration). The file holds the
example PNG's pixels unchanged (MONOCHROME2, 8-bit), a Sequence of Ultrasound Regions with one 2D
region over the whole image in cm per pixel (what scanners write), and no patient attributes at all.
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UltrasoundImageStorage, generate_uid

from training.busi import REPO_ROOT, SOURCES

EXAMPLES = REPO_ROOT / "examples"
DICOM_EXAMPLES = EXAMPLES / "dicom"
# UIDs under pydicom's root derived from the case name: a rewritten file keeps its identity.
UID_ENTROPY = "busi-demo-example"


def pixel_size_cm(case: str) -> float:
    """The scan's pixel size in cm from BrEaST's manifest (square pixels)."""
    with (SOURCES["breast"].data_dir() / "manifest.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["name"] == case)
    return float(row["pixel_size"])


def whole_image_region(width: int, height: int, cm_per_pixel: float) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0  # 2D tissue image
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = width - 1, height - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = cm_per_pixel
    return region


def ultrasound_dicom(pixels: np.ndarray, cm_per_pixel: float, case: str) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.SOPClassUID, dataset.Modality = UltrasoundImageStorage, "US"
    dataset.SOPInstanceUID = generate_uid(entropy_srcs=[UID_ENTROPY, case, "instance"])
    dataset.StudyInstanceUID = generate_uid(entropy_srcs=[UID_ENTROPY, case, "study"])
    dataset.SeriesInstanceUID = generate_uid(entropy_srcs=[UID_ENTROPY, case, "series"])
    dataset.ImageComments = f"BrEaST-Lesions_USG {case} (CC BY 4.0), pixel size from the dataset's manifest"
    dataset.set_pixel_data(pixels, "MONOCHROME2", 8)
    dataset.SequenceOfUltrasoundRegions = [whole_image_region(pixels.shape[1], pixels.shape[0], cm_per_pixel)]
    return dataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="breast_case010", help="a BrEaST example in examples/ (default: the malignant one)")
    args = parser.parse_args(argv)
    pixels = np.asarray(Image.open(EXAMPLES / f"{args.case}.png").convert("L"))
    DICOM_EXAMPLES.mkdir(exist_ok=True)
    out = DICOM_EXAMPLES / f"{args.case}.dcm"
    pydicom.dcmwrite(out, ultrasound_dicom(pixels, pixel_size_cm(args.case), args.case), enforce_file_format=True)
    print(f"wrote {out} ({pixel_size_cm(args.case) * 10:.4f} mm per pixel)")


if __name__ == "__main__":
    main()
