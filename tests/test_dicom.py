"""DICOM input: calibrated scans built from the example PNGs, and every DICOM bundled with pydicom
(no download) decoded to a sensible greyscale image or refused with a clear message; lesion sizes in
millimetres on the real pipeline and on shapes with known answers."""

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array
from pydicom.uid import (MPEG2MPML, DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit,
                         UltrasoundImageStorage)

from inference.decode import COLOUR_REFUSED_FRACTION, MAX_PIXELS, NOT_DICOM, ScanError, decode, decode_scan
from inference.dicom import MAX_INFLATED_BYTES
from inference.postprocess import diameter_and_width, lesion_stats

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PATIENT_NAME = "Secretname^Planted"
PATIENT_ID = "PID-8675309"


@pytest.fixture(scope="module")
def scan():
    return np.asarray(Image.open(EXAMPLES / "busi_malignant_49.png").convert("L"))


@pytest.fixture(scope="module")
def small_dicom(scan):
    """A calibrated two-frame DICOM small enough to damage in many ways quickly."""
    pixels = np.stack([scan[:40, :48], scan[40:80, :48]])
    return dicom_bytes(pixels, SequenceOfUltrasoundRegions=[ultrasound_region(0, 0, 47, 39, 0.01, 0.01)])


def ultrasound_region(x0, y0, x1, y1, cm_per_pixel_x, cm_per_pixel_y, spatial_format=1, units=3) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType = spatial_format, 1
    region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1, y1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = units
    region.PhysicalDeltaX, region.PhysicalDeltaY = cm_per_pixel_x, cm_per_pixel_y
    return region


def dicom_dataset(pixels: np.ndarray, photometric="MONOCHROME2", bits=8, **attributes) -> Dataset:
    """An ultrasound dataset holding `pixels` ((frames,) rows, columns[, 3]) with a patient's name and ID."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.SOPClassUID, dataset.Modality = UltrasoundImageStorage, "US"
    dataset.PatientName, dataset.PatientID = PATIENT_NAME, PATIENT_ID
    dataset.set_pixel_data(pixels, photometric, bits)
    for name, value in attributes.items():
        setattr(dataset, name, value)
    return dataset


def to_bytes(dataset: Dataset, **write_options) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=not write_options, **write_options)
    return buffer.getvalue()


def dicom_bytes(pixels: np.ndarray, photometric="MONOCHROME2", bits=8, **attributes) -> bytes:
    return to_bytes(dicom_dataset(pixels, photometric, bits, **attributes))


# --- calibration ----------------------------------------------------------------------------------

def test_largest_2d_region_in_cm_gives_the_pixel_size(scan):
    height, width = scan.shape
    regions = [ultrasound_region(0, 0, width - 1, height - 1, 0.007, 0.006),
               ultrasound_region(10, 10, 60, 60, 0.02, 0.02),                     # a smaller 2D inset
               ultrasound_region(0, 0, width - 1, 40, 0.5, 0.5, spatial_format=3)]  # a spectral strip
    decoded = decode(dicom_bytes(scan, SequenceOfUltrasoundRegions=regions))
    assert np.array_equal(decoded.gray, scan) and decoded.warnings == []
    assert decoded.mm_per_pixel == pytest.approx((0.07, 0.06)) and decoded.mm_unavailable_reason is None


def test_pixel_spacing_is_row_then_column(scan):
    decoded = decode(dicom_bytes(scan, PixelSpacing=[0.2, 0.1]))
    assert decoded.mm_per_pixel == pytest.approx((0.1, 0.2))


@pytest.mark.parametrize("attributes, reason", [
    ({}, "no calibration in the file"),
    ({"SequenceOfUltrasoundRegions": [ultrasound_region(0, 0, 50, 50, 0.01, 0.01, units=4)]}, "units other than length"),
    ({"SequenceOfUltrasoundRegions": [ultrasound_region(0, 0, 5000, 5000, 0.01, 0.01)]}, "beyond the image"),
    ({"SequenceOfUltrasoundRegions": [ultrasound_region(0, 0, 50, 50, 0, 0.01)]}, "no valid (positive) pixel size"),
    ({"PixelSpacing": [0, 0.1]}, "Pixel Spacing is not two positive numbers (0.0, 0.1)"),
    ({"PixelSpacing": [0.1]}, "Pixel Spacing is not two positive numbers (0.1)"),
    ({"SequenceOfUltrasoundRegions": [ultrasound_region(0, 0, 50, 50, 1000, 1000)]},
     "ultrasound image region gives pixels of 1e+04 x 1e+04 mm, outside the 0.005–2 mm"),
    ({"SequenceOfUltrasoundRegions": [ultrasound_region(0, 0, 50, 50, 0.01, 1e-9)]}, "pixels of 0.1 x 1e-08 mm"),
    ({"PixelSpacing": [0.1, 5]}, "Pixel Spacing gives pixels of 5 x 0.1 mm, outside"),
])
def test_missing_or_unusable_calibration_says_why(scan, attributes, reason):
    decoded = decode(dicom_bytes(scan, **attributes))
    assert np.array_equal(decoded.gray, scan), "the scan itself is analysed"
    assert decoded.mm_per_pixel is None and reason in decoded.mm_unavailable_reason


def test_calibration_at_the_edges_of_plausible_is_used(scan):
    """5 µm and 2 mm pixels: a shallow field on the largest accepted image, a field squeezed into the smallest."""
    region = ultrasound_region(0, 0, 50, 50, 0.0005, 0.2)
    assert decode(dicom_bytes(scan, SequenceOfUltrasoundRegions=[region])).mm_per_pixel == pytest.approx((0.005, 2.0))


def test_an_implausible_region_gives_way_to_a_plausible_pixel_spacing(scan):
    region = ultrasound_region(0, 0, 50, 50, 1000, 1000)
    decoded = decode(dicom_bytes(scan, SequenceOfUltrasoundRegions=[region], PixelSpacing=[0.2, 0.1]))
    assert decoded.mm_per_pixel == pytest.approx((0.1, 0.2)) and decoded.mm_unavailable_reason is None


def test_text_in_pixel_spacing_is_not_quoted(scan):
    """A damaged Pixel Spacing may hold any text, a patient's name included: the reason says so without it."""
    data = dicom_bytes(scan, PixelSpacing=[0.125, 0.25])
    damaged = data.replace(b"0.125\\0.25", b"Secretname")
    assert damaged != data
    decoded = decode(damaged)
    assert decoded.mm_per_pixel is None and "Pixel Spacing is not two positive numbers" in decoded.mm_unavailable_reason
    assert "Secretname" not in decoded.mm_unavailable_reason.replace(", ", "")


def test_png_and_arrays_have_no_calibration(scan):
    for source in (EXAMPLES / "busi_malignant_49.png", scan):
        decoded = decode(source)
        assert decoded.mm_per_pixel is None and decoded.mm_unavailable_reason == NOT_DICOM


def test_bundled_ultrasound_resized_after_calibration_is_not_measured():
    """pydicom's palette ultrasound was shrunk for its test suite; its regions still describe the original."""
    decoded = decode(get_testdata_file("examples_palette.dcm"))
    assert decoded.mm_per_pixel is None and "beyond the image" in decoded.mm_unavailable_reason


# --- pixels ---------------------------------------------------------------------------------------

def test_monochrome1_is_inverted(scan):
    assert np.array_equal(decode(dicom_bytes(scan, "MONOCHROME1")).gray, 255 - scan)


@pytest.mark.parametrize("element, bits", [("FloatPixelData", 32), ("DoubleFloatPixelData", 64)])
def test_float_pixel_data_in_0_to_1_decodes_like_a_float_tiff(scan, element, bits):
    dataset = dicom_dataset(scan)
    del dataset.PixelData, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation  # not used by float data
    dataset.BitsAllocated = bits
    values = scan.astype(f"float{bits}") / 255
    setattr(dataset, element, values.tobytes())
    tiff = io.BytesIO()
    Image.fromarray(values.astype(np.float32), mode="F").save(tiff, "TIFF")
    gray = decode(to_bytes(dataset)).gray
    assert np.array_equal(gray, scan) and np.array_equal(gray, decode(tiff.getvalue()).gray)


def test_16_bit_without_window_is_stretched_and_with_window_is_windowed(scan):
    wide = scan.astype(np.uint16) * 16  # 12-bit data
    gray = decode(dicom_bytes(wide, bits=12)).gray
    expected = (wide - wide.min()) / (wide.max() - wide.min()) * 255
    assert np.abs(gray - expected).max() <= 1
    windowed = decode(dicom_bytes(wide, bits=12, WindowCenter=2048, WindowWidth=1024)).gray
    assert windowed[wide <= 1536].max() == 0 and windowed[wide > 2560].min() == 255
    inside = (wide > 1600) & (wide < 2500)
    assert np.abs(windowed[inside] - (wide[inside] - 1536) / 1024 * 255).max() <= 1.5


def test_multi_frame_analyses_frame_0_by_default_and_any_frame_on_request(scan):
    frames = np.stack([scan, 255 - scan, scan[::-1]])
    data = dicom_bytes(frames)
    first = decode(data)
    assert np.array_equal(first.gray, scan) and (first.frame, first.n_frames) == (0, 3)
    assert any("3 frames" in w and "frame 0" in w for w in first.warnings)
    last = decode(data, frame=2)
    assert np.array_equal(last.gray, scan[::-1]) and any("frame 2" in w for w in last.warnings)
    with pytest.raises(ScanError, match="numbered 0 to 2"):
        decode(data, frame=3)


def test_dicom_without_extension_or_preamble_decodes(scan, tmp_path):
    path = tmp_path / "IM0001"
    path.write_bytes(dicom_bytes(scan))
    assert np.array_equal(decode_scan(path)[0], scan)
    dataset = dicom_dataset(scan)
    del dataset.file_meta  # a bare dataset: no preamble, no header, no transfer syntax
    bare = to_bytes(dataset, implicit_vr=True, little_endian=True)
    assert bare[:2] == b"\x08\x00" and np.array_equal(decode(bare).gray, scan)


def test_dicom_without_pixel_data_is_refused(scan):
    dataset = dicom_dataset(scan)
    del dataset.PixelData
    with pytest.raises(ScanError, match=r"\(Ultrasound Image Storage\) holds no pixel data: the file is damaged") as refusal:
        decode(to_bytes(dataset))
    assert PATIENT_NAME not in str(refusal.value)
    with pytest.raises(ScanError, match=r"\(RT Plan Storage\) holds no pixel data"):
        decode(get_testdata_file("rtplan.dcm"))


def test_unsupported_encoding_is_named(scan):
    dataset = dicom_dataset(scan)
    dataset.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(200)])  # an MPEG-2 stream's start
    dataset.file_meta.TransferSyntaxUID = MPEG2MPML
    with pytest.raises(ScanError, match="unsupported encoding.*MPEG2 Main Profile"):
        decode(to_bytes(dataset))


def test_damaged_dicom_is_refused(scan):
    data = dicom_bytes(scan)
    with pytest.raises(ScanError, match="damaged"):
        decode(data[: len(data) // 2])
    bundled = (EXAMPLES / "dicom" / "breast_case010.dcm").read_bytes()
    for length in (200, 400):  # cut in the file's header; after its SOP class, before its pixels
        with pytest.raises(ScanError, match="damaged or truncated"):
            decode(bundled[:length])
    with pytest.raises(ScanError, match="DICOM file"):  # the magic, then noise
        decode(bytes(128) + b"DICM" + bytes(range(256)) * 4)


def test_bytes_that_only_start_like_a_dataset_are_not_dicom():
    with pytest.raises(ScanError, match="not an image"):
        decode(b"\x08\x00" + bytes(range(256)) * 4)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_dicom_never_raises_anything_but_a_scan_error(small_dicom, data):
    """Cut short, or with bytes overwritten anywhere (header, attributes, pixels)."""
    damaged = bytearray(small_dicom[: data.draw(st.integers(0, len(small_dicom)))])
    for _ in range(data.draw(st.integers(0, 8))):
        if damaged:
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(damaged))
    except ScanError as error:
        assert str(error)
    else:
        assert decoded.gray.dtype == np.uint8 and min(decoded.gray.shape) >= 32


def test_size_limits_apply_to_dicom(scan):
    with pytest.raises(ScanError, match="at least 32 px"):
        decode(dicom_bytes(scan[:20]))
    dataset = dicom_dataset(scan)
    dataset.Rows = dataset.Columns = int(MAX_PIXELS ** 0.5) + 100  # a header that promises too much
    with pytest.raises(ScanError, match="megapixels"):
        decode(to_bytes(dataset))


def test_a_deflated_file_that_inflates_far_beyond_a_scan_is_refused_before_it_is_inflated(scan):
    """A deflated dataset is inflated whole by pydicom: a 2 MB file of deflated zeros took 5.6 GB (fuzz
    pass). Refused after inflating at most a megabyte at a time; a real deflated scan still decodes."""
    dataset = dicom_dataset(scan)
    assert decode(to_bytes(dataset, implicit_vr=False, little_endian=True, force_encoding=True)).gray.shape == scan.shape
    dataset.add_new((0x7FE1, 0x0010), "LO", "FUZZ")
    dataset.add_new((0x7FE1, 0x1000), "OB", bytes(MAX_INFLATED_BYTES + 2 ** 20))  # zeros: deflate to ~0.3 MB
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb = to_bytes(dataset)
    assert len(bomb) < 2 ** 20
    with pytest.raises(ScanError, match="inflate to more than 256 MB"):
        decode(bomb)


@pytest.mark.parametrize("transfer_syntax, fmt", [(JPEGBaseline8Bit, "JPEG"), (JPEG2000Lossless, "JPEG2000")])
def test_a_compressed_frame_larger_than_the_header_says_is_refused_before_it_is_decoded(scan, transfer_syntax, fmt):
    """A codec allocates what its codestream's own header says: an 81 kB file whose JPEG header claimed
    20000 x 20000 pixels took 2.7 GB before it was refused (fuzz pass)."""
    def encapsulated(picture: np.ndarray) -> bytes:
        dataset = dicom_dataset(scan)
        codestream = io.BytesIO()
        Image.fromarray(picture).save(codestream, format=fmt)
        dataset.PixelData = encapsulate([codestream.getvalue()])
        dataset["PixelData"].VR = "OB"
        dataset.file_meta.TransferSyntaxUID = transfer_syntax
        return to_bytes(dataset)

    assert decode(encapsulated(scan)).gray.shape == scan.shape
    with pytest.raises(ScanError, match=f"not the {scan.shape[1]} x {scan.shape[0]} pixels its header says"):
        decode(encapsulated(np.tile(scan, (3, 3))))


# pydicom's bundled files: (name, None when it decodes, else what the refusal says)
BUNDLED = [
    ("examples_ybr_color.dcm", None),        # ultrasound cine, 30 frames, JPEG baseline YBR_FULL_422
    ("examples_palette.dcm", None),          # ultrasound, PALETTE COLOR
    ("examples_rgb_color.dcm", None),        # ultrasound, RGB
    ("examples_jpeg2k.dcm", None),           # ultrasound, JPEG 2000 lossless YBR_RCT
    ("ExplVR_BigEnd.dcm", None),             # ultrasound, RGB, explicit VR big endian
    ("SC_rgb_rle.dcm", None),
    ("SC_rgb_rle_16bit.dcm", None),
    ("SC_rgb_rle_32bit_2frame.dcm", None),
    ("SC_rgb_jpeg_dcmtk.dcm", None),         # JPEG baseline, YBR_FULL
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", None),
    ("SC_rgb_dcmtk_+eb+cy+s2.dcm", None),    # JPEG baseline, YBR_FULL_422
    ("SC_rgb_dcmtk_+eb+cr.dcm", None),       # JPEG baseline, RGB
    ("SC_ybr_full_422_uncompressed.dcm", None),
    ("SC_rgb_jpeg_gdcm.dcm", None),          # JPEG lossless
    ("SC_rgb_gdcm_KY.dcm", None),            # JPEG 2000
    ("SC_rgb_jls_lossy_line.dcm", None),     # JPEG-LS
    ("SC_rgb_jpeg.dcm", None),
    ("JPEG2000.dcm", None),
    ("JPGExtended.dcm", None),
    ("MR_small_RLE.dcm", None),
    ("MR_small_jp2klossless.dcm", None),
    ("MR_small_jpeg_ls_lossless.dcm", None),
    ("MR_small_bigendian.dcm", None),
    ("CT_small.dcm", None),                  # signed 16-bit with rescale
    ("693_J2KI.dcm", None),
    ("image_dfl.dcm", None),                 # deflated
    ("examples_overlay.dcm", None),
    ("liver_1frame.dcm", None),              # 1 bit per pixel
    ("MR_truncated.dcm", "damaged"),
    ("JPEG2000-embedded-sequence-delimiter.dcm", "damaged"),  # its frame is not the size its header says
    ("SC_rgb_small_odd.dcm", "at least 32 px"),
    ("rtdose.dcm", "at least 32 px"),
    ("rtplan.dcm", "no pixel data"),
    ("rtstruct.dcm", "no pixel data"),       # no preamble
    ("waveform_ecg.dcm", "no pixel data"),
    ("test-SR.dcm", "no pixel data"),
]


@pytest.mark.parametrize("name, refusal", BUNDLED)
def test_bundled_dicom_decodes_or_is_refused_clearly(name, refusal):
    path = get_testdata_file(name)
    if refusal is not None:
        with pytest.raises(ScanError, match=refusal):
            decode(path)
        return
    decoded = decode(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path)
    assert decoded.gray.dtype == np.uint8 and decoded.gray.shape == (dataset.Rows, dataset.Columns)
    assert decoded.gray.std() > 0, "the image has content"
    if dataset.SamplesPerPixel == 3 and dataset.BitsAllocated == 8:  # grey is the ITU-R 601 luma of pydicom's RGB
        rgb = pixel_array(dataset, index=0).astype(np.float64)
        luma = rgb @ [0.299, 0.587, 0.114]
        assert np.abs(decoded.gray - luma).max() <= 1


def test_colour_models_give_the_same_grey():
    """The same colour test card stored as RGB (RLE), YCbCr (uncompressed 4:2:2, JPEG) and 16/32-bit RGB."""
    reference = decode(get_testdata_file("SC_rgb_rle.dcm")).gray.astype(int)
    for name in ("SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_16bit.dcm",
                 "SC_rgb_rle_32bit.dcm", "SC_rgb_gdcm_KY.dcm"):
        assert np.abs(decode(get_testdata_file(name)).gray - reference).mean() < 1, name


def test_a_colour_dicom_says_which_pixels_are_coloured():
    coloured = decode(get_testdata_file("SC_rgb_rle.dcm")).coloured
    assert coloured is not None and coloured.mean() > COLOUR_REFUSED_FRACTION


def test_cine_frames_differ():
    path = get_testdata_file("examples_ybr_color.dcm")
    first, later = decode(path), decode(path, frame=20)
    assert first.n_frames == 30 and not np.array_equal(first.gray, later.gray)


# --- millimetres ----------------------------------------------------------------------------------

def test_disc_area_and_diameter():
    yy, xx = np.mgrid[:300, :400]
    radius, spacing = 60, 0.1
    stats = lesion_stats((xx - 200) ** 2 + (yy - 150) ** 2 <= radius ** 2, (spacing, spacing))
    assert stats["lesion_area_mm2"] == pytest.approx(np.pi * (radius * spacing) ** 2, rel=0.01)
    assert stats["longest_diameter_mm"] == pytest.approx(2 * radius * spacing, abs=spacing)
    assert stats["perpendicular_width_mm"] == pytest.approx(2 * radius * spacing, abs=spacing)
    assert stats["size_mm_unavailable"] is None and stats["mm_per_pixel"] == [spacing, spacing]


@pytest.mark.parametrize("angle", [0.0, 0.5, np.pi / 2])
def test_ellipse_diameter_is_its_major_axis_and_width_its_minor(angle):
    yy, xx = np.mgrid[:400, :400] - 200.0
    along, across = xx * np.cos(angle) + yy * np.sin(angle), -xx * np.sin(angle) + yy * np.cos(angle)
    ellipse = (along / 120) ** 2 + (across / 45) ** 2 <= 1
    stats = lesion_stats(ellipse, (0.05, 0.05))
    assert stats["longest_diameter_mm"] == pytest.approx(240 * 0.05, abs=0.1)
    assert stats["perpendicular_width_mm"] == pytest.approx(90 * 0.05, abs=0.1)


def test_anisotropic_pixels_are_measured_in_physical_space():
    """A square of 100 x 50 pixels whose pixels are 0.1 mm wide and 0.2 mm tall is 10 mm square."""
    mask = np.zeros((80, 140), bool)
    mask[10:60, 20:120] = True
    stats = lesion_stats(mask, (0.1, 0.2))
    assert stats["lesion_area_mm2"] == pytest.approx(100.0)
    side = 9.9  # between the outermost pixel centres: 99 x 0.1 mm and 49 x 0.2 mm...
    assert stats["longest_diameter_mm"] == pytest.approx(np.hypot(side, 49 * 0.2), abs=0.01)


def test_each_lesion_is_measured_and_the_area_is_the_total():
    mask = np.zeros((100, 200), bool)
    mask[10:30, 10:50] = True   # the larger
    mask[60:70, 150:160] = True
    stats = lesion_stats(mask, (0.5, 0.5))
    assert stats["lesion_area_mm2"] == pytest.approx((800 + 100) * 0.25)
    assert [lesion["area_mm2"] for lesion in stats["lesions"]] == pytest.approx([200.0, 25.0])
    assert stats["longest_diameter_mm"] == stats["lesions"][0]["longest_diameter_mm"] == pytest.approx(np.hypot(39, 19) * 0.5, abs=0.01)


def test_without_spacing_mm_are_none_with_a_reason():
    mask = np.zeros((50, 50), bool)
    mask[5:20, 5:20] = True
    stats = lesion_stats(mask, None, NOT_DICOM)
    assert stats["lesion_area_mm2"] is stats["longest_diameter_mm"] is stats["lesions"][0]["area_mm2"] is None
    assert stats["size_mm_unavailable"] == NOT_DICOM


def test_thin_and_tiny_lesions():
    assert diameter_and_width(np.array([[0.0, 0.0]])) == (0.0, 0.0)
    line = np.column_stack([np.arange(50.0), np.full(50, 3.0)])
    assert diameter_and_width(line) == pytest.approx((49.0, 0.0))


# --- through the real pipeline --------------------------------------------------------------------

@pytest.mark.parametrize("calibration, mm_per_pixel", [("ultrasound region", (0.071, 0.063)),
                                                      ("pixel spacing", (0.09, 0.08))])
def test_analysis_reports_lesion_size_in_mm(analyzer, scan, calibration, mm_per_pixel):
    height, width = scan.shape
    if calibration == "ultrasound region":
        attributes = {"SequenceOfUltrasoundRegions": [
            ultrasound_region(0, 0, width - 1, height - 1, mm_per_pixel[0] / 10, mm_per_pixel[1] / 10)]}
    else:
        attributes = {"PixelSpacing": [mm_per_pixel[1], mm_per_pixel[0]]}
    stats = analyzer.analyze(dicom_bytes(scan, **attributes)).lesion_stats()
    assert stats["lesion_count"] >= 1, "the example shows a lesion"
    assert stats["lesion_area_px"] == analyzer.analyze(scan).lesion_stats()["lesion_area_px"], "the same pixels"
    assert stats["mm_per_pixel"] == pytest.approx(list(mm_per_pixel)) and stats["size_mm_unavailable"] is None
    expected = stats["lesion_area_px"] * mm_per_pixel[0] * mm_per_pixel[1]
    assert stats["lesion_area_mm2"] == pytest.approx(expected, rel=0.01)
    largest = max(stats["lesions"], key=lambda lesion: lesion["area_px"])
    box = largest["bounding_box"]
    box_diagonal = np.hypot((box["x1"] - box["x0"]) * mm_per_pixel[0], (box["y1"] - box["y0"]) * mm_per_pixel[1])
    assert 0 < stats["perpendicular_width_mm"] <= stats["longest_diameter_mm"] <= box_diagonal
    assert stats["longest_diameter_mm"] == largest["longest_diameter_mm"]


def test_analysis_of_uncalibrated_dicom_and_png_says_why(analyzer, scan):
    mistyped = pydicom.dcmread(EXAMPLES / "dicom" / "breast_case010.dcm")
    region = mistyped.SequenceOfUltrasoundRegions[0]
    region.PhysicalDeltaX = region.PhysicalDeltaY = 1000  # cm per pixel
    for source, reason in ((dicom_bytes(scan), "no calibration in the file"),
                           (to_bytes(mistyped), "outside the 0.005–2 mm a breast ultrasound pixel can measure"),
                           (EXAMPLES / "busi_malignant_49.png", NOT_DICOM)):
        stats = analyzer.analyze(source).lesion_stats()
        assert stats["lesion_area_mm2"] is None and stats["longest_diameter_mm"] is None
        assert stats["mm_per_pixel"] is None and all(lesion["area_mm2"] is None for lesion in stats["lesions"])
        assert reason in stats["size_mm_unavailable"]


def test_analysis_of_a_chosen_frame(analyzer, scan):
    data = dicom_bytes(np.stack([np.full_like(scan, 30), scan]))
    analysis = analyzer.analyze(data, frame=1)
    assert np.array_equal(analysis.gray, scan) and (analysis.frame, analysis.n_frames) == (1, 2)
    assert any("2 frames" in w and "frame 1" in w for w in analysis.warnings)


def test_patient_identity_appears_nowhere(analyzer, scan):
    data = dicom_bytes(np.stack([scan, scan]), SequenceOfUltrasoundRegions=[
        ultrasound_region(0, 0, scan.shape[1] - 1, scan.shape[0] - 1, 0.007, 0.007)])
    assert PATIENT_NAME.encode() in data and PATIENT_ID.encode() in data
    analysis = analyzer.analyze(data)
    shown = repr(decode(data)) + repr(analysis.lesion_stats()) + repr(analysis.warnings) + repr(analysis.notes)
    for secret in (PATIENT_NAME, "Secretname", PATIENT_ID):
        assert secret not in shown


def on_a_scanners_screen(pixels: np.ndarray, top: int = 90, left: int = 200) -> np.ndarray:
    """`pixels` as a scanner's DICOM shows them: on a black screen with a depth ruler (ticks and numbers)
    just left of the scan and a grey-scale bar just right of it, as most scanners export their screen."""
    from PIL import ImageDraw, ImageFont

    height, width = pixels.shape
    screen = Image.new("L", (width + 2 * left, height + 2 * top), 0)
    screen.paste(Image.fromarray(pixels), (left, top))
    draw, font = ImageDraw.Draw(screen), ImageFont.load_default(size=11)
    for depth, y in enumerate(range(top, top + height, height // 8)):
        draw.line((left - 10, y, left - 3, y), fill=200)
        draw.text((left - 26, y - 6), str(depth), fill=200, font=font)
    for y in range(height):
        draw.line((left + width + 20, top + y, left + width + 33, top + y), fill=255 - 255 * y // height)
    return np.asarray(screen)


def test_a_scanners_screen_is_framed_where_its_ultrasound_region_says_the_scan_is(analyzer):
    """A scanner's DICOM of its whole screen: its 2D ultrasound region says where the scan lies, and the
    field is looked for there. Without it the ruler beside the scan is taken in (and was, before grey-scale
    bars were told apart, the bar too), which shrinks the scan in the models' input and changes its lesion
    (tester: 12.6 x 10.4 mm where the scan alone measures 15.2 x 11.4 mm)."""
    alone = pydicom.dcmread(EXAMPLES / "dicom" / "breast_case010.dcm")
    pixels = alone.pixel_array
    height, width = pixels.shape
    mm = 10 * float(alone.SequenceOfUltrasoundRegions[0].PhysicalDeltaX)
    screen = on_a_scanners_screen(pixels)
    region = ultrasound_region(200, 90, 200 + width - 1, 90 + height - 1, mm / 10, mm / 10)
    shown = analyzer.analyze(dicom_bytes(screen, SequenceOfUltrasoundRegions=[region]))
    expected = analyzer.analyze(EXAMPLES / "dicom" / "breast_case010.dcm")
    assert shown.class_framing.box == (90, 90 + height, 200, 200 + width)
    np.testing.assert_allclose(shown.probabilities, expected.probabilities, atol=1e-4)
    assert shown.mask()[90:90 + height, 200:200 + width].sum() == expected.mask().sum() > 0
    assert shown.lesion_stats()["longest_diameter_mm"] == expected.lesion_stats()["longest_diameter_mm"]
    unsaid = analyzer.analyze(dicom_bytes(screen))  # the same screen without regions: the ruler's numbers go in
    assert unsaid.class_framing.box[2] < 200 - 3


@pytest.mark.parametrize("gutter", [40, 0], ids=["apart", "touching"])
def test_two_regions_side_by_side_are_two_views_each_with_its_own_calibration(analyzer, scan, gutter):
    """A dual-view scanner writes one region per view, each with its calibration (two depths: two pixel
    sizes). Each region is a view, even touching the other (taken as one field, the left view's lesion went
    undrawn; second tester), and each view is measured with its own region's calibration (both were measured
    with the larger region's: silently wrong millimetres)."""
    height, width = scan.shape
    pair = np.zeros((height + 40, 2 * width + 20 + gutter), np.uint8)
    right = 10 + width + gutter
    pair[20:20 + height, 10:10 + width], pair[20:20 + height, right:right + width] = scan, scan[:, ::-1]
    regions = [ultrasound_region(10, 20, 9 + width, 19 + height, 0.007, 0.007),
               ultrasound_region(right, 20, right + width - 1, 19 + height, 0.014, 0.014)]
    data = dicom_bytes(pair, SequenceOfUltrasoundRegions=regions)
    assert [box for box, _ in decode(data).image_regions] == [(20, 20 + height, 10, 10 + width),
                                                              (20, 20 + height, right, right + width)]
    for view, shown, mm in ((0, scan, 0.07), (1, scan[:, ::-1], 0.14)):
        alone = analyzer.analyze(shown).lesion_stats()["lesion_area_px"]
        analysis = analyzer.analyze(data, view=view)
        assert analysis.class_framing.views == 2
        stats = analysis.lesion_stats()
        assert stats["mm_per_pixel"] == pytest.approx([mm, mm]) and stats["lesion_area_px"] == alone
        assert stats["lesion_area_mm2"] == pytest.approx(alone * mm * mm, rel=0.01)


def test_a_region_that_cannot_be_used_is_left_out_and_none_usable_is_said(analyzer, scan):
    """A zero-size region beside a good one was taken into the box searched, and alone had the scan refused as
    1 x 1 px; regions outside the image changed the answer without a word (second tester)."""
    height, width = scan.shape
    screen = on_a_scanners_screen(scan)
    good = ultrasound_region(200, 90, 199 + width, 89 + height, 0.007, 0.007)
    expected = analyzer.analyze(dicom_bytes(screen, SequenceOfUltrasoundRegions=[good]))
    dot = ultrasound_region(5, 5, 5, 5, 0.007, 0.007)
    with_dot = analyzer.analyze(dicom_bytes(screen, SequenceOfUltrasoundRegions=[good, dot]))
    assert with_dot.class_framing.box == expected.class_framing.box and with_dot.warnings == expected.warnings
    for unusable in (dot, ultrasound_region(0, 0, 4 * width, 4 * height, 0.007, 0.007)):
        analysis = analyzer.analyze(dicom_bytes(screen, SequenceOfUltrasoundRegions=[unusable]))
        assert any("ultrasound regions do not describe a usable part" in w for w in analysis.warnings)
        assert not analysis.withheld or "too small" not in analysis.warnings[0]


def test_a_view_whose_region_has_no_calibration_is_not_measured_with_the_other_views():
    """Two views, the right one's region in units other than length: the file's calibration came from the
    left region, and the right view was measured with it, perhaps at another depth, without a word (review).
    It gets no mm and says why; a Pixel Spacing, which holds for the whole image, still applies to it."""
    pair = np.zeros((120, 260), np.uint8)
    regions = [ultrasound_region(10, 10, 119, 109, 0.007, 0.007),
               ultrasound_region(140, 10, 249, 109, 0.007, 0.007, units=0)]
    left, right = (10, 110, 10, 120), (10, 110, 140, 250)
    decoded = decode(dicom_bytes(pair, SequenceOfUltrasoundRegions=regions))
    assert decoded.calibration_at(left) == (pytest.approx((0.07, 0.07)), None)
    mm, why = decoded.calibration_at(right)
    assert mm is None and "region holding the view analysed gives no valid pixel size" in why
    spaced = decode(dicom_bytes(pair, SequenceOfUltrasoundRegions=regions, PixelSpacing=[0.2, 0.1]))
    assert spaced.calibration_at(right) == ((0.1, 0.2), None) and spaced.calibration_at(left)[0] == pytest.approx((0.07, 0.07))


def test_a_palette_of_8_bit_entries_stored_in_16_bits_gives_the_scan(scan):
    """The standard allows 8-bit palette entries in a 16-bit descriptor (PS3.3 C.7.6.3.1.5); scaled as 16-bit
    they made the scan black (input review)."""
    dataset = dicom_dataset(scan)
    dataset.PhotometricInterpretation = "PALETTE COLOR"
    for colour in ("Red", "Green", "Blue"):
        setattr(dataset, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(dataset, f"{colour}PaletteColorLookupTableData", np.arange(256, dtype=np.uint16).tobytes())
    np.testing.assert_allclose(decode(to_bytes(dataset)).gray, scan, atol=1)


def test_a_voi_lut_stored_shorter_than_it_says_is_ignored_not_the_file_refused(scan):
    """An OW LUT shorter than its descriptor raised struct.error in pydicom, which refused the whole file as
    damaged where an invalid LUT is meant to be ignored (input review)."""
    dataset = dicom_dataset(scan.astype(np.uint16) * 16, "MONOCHROME2", 16, BitsStored=12, HighBit=11)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new("LUTData", "OW", np.arange(2048, dtype=np.uint16).tobytes())
    dataset.VOILUTSequence = [item]
    np.testing.assert_allclose(decode(to_bytes(dataset)).gray, scan, atol=1)


def test_a_region_ending_one_pixel_past_the_image_keeps_its_calibration():
    """A far corner written as an exclusive end (MaxX1 = Columns) cost the scan its calibration, with "was it
    resized after the scan?" (input review); two pixels past is still another image's region."""
    pixels = np.zeros((120, 160), np.uint8)
    one_past = decode(dicom_bytes(pixels, SequenceOfUltrasoundRegions=[ultrasound_region(0, 0, 160, 120, 0.007, 0.007)]))
    assert one_past.mm_per_pixel == pytest.approx((0.07, 0.07)) and one_past.image_regions[0][0] == (0, 120, 0, 160)
    two_past = decode(dicom_bytes(pixels, SequenceOfUltrasoundRegions=[ultrasound_region(0, 0, 161, 120, 0.007, 0.007)]))
    assert two_past.mm_per_pixel is None and "beyond the image" in two_past.mm_unavailable_reason
