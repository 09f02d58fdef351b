"""DICOM file -> one frame as displayed (8-bit greyscale or RGB) and the size of its pixels in mm.

Recognised by the `DICM` magic after the 128-byte preamble, whatever the file's name; a dataset
written without preamble is recognised only when it starts with a group-0002 or group-0008 element
and parses into something with a SOP class or pixel data, so random bytes are not taken for DICOM.

Pixels: MONOCHROME2 and MONOCHROME1 (inverted, so tissue is bright either way), RGB and the YBR
colour models (pydicom converts them to RGB), PALETTE COLOR (through its lookup table); uncompressed,
deflated, RLE, JPEG baseline/extended/lossless, JPEG-LS and JPEG 2000 (pylibjpeg plugins). A
greyscale frame gets the file's modality rescale and VOI LUT or window when it has them, and is
then brought to 8 bits like a 16-bit PNG (kept when it lies in 0..255, else stretched over its range
less the outlying OUTLIER_FRACTION at each end, `inference.decode.to_8_bit`;
float pixel data in 0..1 is scaled by 255, like a float TIFF).

Calibration: the largest 2D region of the Sequence of Ultrasound Regions measured in cm (what
ultrasound scanners write), else Pixel Spacing, each only when its pixels measure what a breast
ultrasound's plausibly can (PLAUSIBLE_MM_PER_PIXEL); otherwise the reason there is none.

Where the image is: a scanner's DICOM is often its whole screen (rulers, a grey-scale bar, settings
text, a body marker around the scan), and its 2D ultrasound regions say where the scan lies on it
(`DicomFrame.image_regions`, each with its own calibration: two views side by side are two regions, and
may be at two depths). Framing looks for the ultrasound field inside each: taken in, a ruler and a
grey-scale bar beside a scan shrank it in the models' input (tester: 12.6 x 10.4 mm where the scan alone
measures 15.2 x 11.4 mm). A region under MIN_SIDE px on a side is no scan and is not used; when the file
has 2D regions but none can be used, the user is told that the whole image was searched.

Patient-identifying attributes are never read: only the image, region and class attributes are
touched, nothing of the dataset is kept, and no message quotes a value from the file other than
its transfer syntax, SOP class and the numbers of its calibration.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.pixels.utils import get_nr_frames
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

from inference.decode import MIN_SIDE, ScanError, check_frame, check_size, to_8_bit

log = logging.getLogger(__name__)

PREAMBLE = 128
MAGIC = b"DICM"
# a dataset written without preamble starts with its file meta information (group 0002, always little
# endian) or, without that too, with group 0008 (SOP class, modality, ...) in either byte order
HEADERLESS_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x08")
REGION_2D = 1       # Region Spatial Format: 2D (tissue or flow)
UNITS_CM = 3        # Physical Units X/Y Direction: cm
COLOUR_MODELS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")  # pydicom yields RGB for all of them
GREY_MODELS = ("MONOCHROME1", "MONOCHROME2")
# mm per pixel a breast ultrasound can plausibly have, on either axis. The finest: a 2 cm deep field
# (a shallow breast setting) spread over the 4000 px on a side the app accepts at most (MAX_PIXELS);
# the coarsest: a 6 cm field squeezed into the MIN_SIDE = 32 px it accepts at least. Outside them the
# calibration is damaged or in the wrong unit (a 1000 where 0.01 cm was meant), not a real scan's.
PLAUSIBLE_MM_PER_PIXEL = (0.005, 2.0)
# A deflated dataset is inflated whole by pydicom before anything in it can be checked: 2 MB of deflated
# zeros took 5.6 GB of memory (a 50 MB upload would take the server down). One that inflates beyond this
# is refused first (16 megapixels x 3 colours is 48 MB a frame: room for a short deflated cine).
MAX_INFLATED_BYTES = 256 * 2 ** 20
FILE_META_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"  # (0002,0000) File Meta Information Group Length, UL, 4 bytes

# pydicom's reading validation warns and logs invalid values verbatim; in a damaged file the value it
# quotes may be a patient's name. Values are read as they are, and nothing of them is written anywhere.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


@dataclass
class DicomFrame:
    pixels: np.ndarray                        # (H, W) uint8 greyscale or (H, W, 3) uint8 RGB, as displayed
    n_frames: int
    mm_per_pixel: tuple[float, float] | None  # (x: across columns, y: down rows)
    mm_unavailable_reason: str | None
    # the usable 2D regions: ((top, bottom, left, right), end-exclusive; the mm per pixel (x, y) that applies in
    # each — its own calibration, else the file's Pixel Spacing — or None)
    image_regions: list[tuple[tuple[int, int, int, int], tuple[float, float] | None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read(data: bytes, frame: int = 0) -> DicomFrame | None:
    """Frame `frame` (from 0) of the DICOM file in `data`; None when `data` is not DICOM at all.
    Raises ScanError for a DICOM file that cannot be analysed."""
    dataset = _parse(data)
    if dataset is None:
        return None
    # A damaged file fails in pydicom in many ways (ValueError, KeyError, struct.error, RuntimeError
    # from a codec, ...): whichever it is, the user can only be told the file is damaged.
    # Logged, so that a failure of this app's own (a codec plugin, a bug) is not only ever reported as a damaged file.
    try:
        return _read_frame(dataset, frame)
    except (ScanError, MemoryError):
        raise
    except Exception as error:  # the traceback at debug level: the batch command printed it amid its progress bar
        log.warning("DICOM pixel data not decoded (%s)", type(error).__name__)
        log.debug("DICOM pixel data not decoded", exc_info=True)
        raise ScanError("This DICOM image cannot be decoded: the file is damaged, truncated or not a valid image.") from None


def _read_frame(dataset: Dataset, frame: int) -> DicomFrame:
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ScanError(_without_pixels(dataset))
    transfer_syntax = _transfer_syntax(dataset)
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        decoder = None
    if decoder is None or not decoder.is_available:
        raise ScanError(f"This DICOM file uses an unsupported encoding ({transfer_syntax.name}, transfer syntax "
                        f"{transfer_syntax}); export it uncompressed, as JPEG or JPEG 2000 DICOM, or as PNG.")
    check_size(int(dataset.Columns), int(dataset.Rows))
    n_frames = get_nr_frames(dataset, warn=False)
    check_frame(frame, n_frames)
    if transfer_syntax.is_encapsulated:
        _check_codestream_size(get_frame(dataset.PixelData, frame, number_of_frames=n_frames),
                               int(dataset.Columns), int(dataset.Rows))
    pixels = _displayed(dataset, pixel_array(dataset, index=frame))
    return DicomFrame(pixels, n_frames, *_calibration(dataset), *_image_regions(dataset))


REGIONS_UNUSED = ("The file's ultrasound regions do not describe a usable part of this image (outside it, reversed or "
                  "under {side} pixels on a side), so the scan was looked for in the whole image: check that it was "
                  "found (the scan box shows the part analysed).")


def _image_regions(dataset: Dataset) -> tuple[list, list[str]]:
    """(the file's usable 2D ultrasound regions, left to right: ((top, bottom, left, right) end-exclusive, mm
    per pixel or None), warnings): usable when it lies within the image and spans at least MIN_SIDE px each
    way; a warning when the file has 2D regions but none is usable. A region's mm per pixel is its own
    calibration, else the file's Pixel Spacing (which holds for the whole image), else None: never another
    region's, which may be a view at another depth."""
    width, height, spacing_mm = int(dataset.Columns), int(dataset.Rows), _spacing_mm(dataset)
    spacing_mm = spacing_mm if spacing_mm is not None and _plausible(spacing_mm) else None
    planar = [region for region in dataset.get("SequenceOfUltrasoundRegions") or []
              if region.get("RegionSpatialFormat") == REGION_2D]
    usable = []
    for region in planar:
        if not _fits(region, width, height):
            continue
        x0, y0, x1, y1 = (int(region.get(name)) for name in ("RegionLocationMinX0", "RegionLocationMinY0",
                                                              "RegionLocationMaxX1", "RegionLocationMaxY1"))
        if min(x1 - x0, y1 - y0) + 1 >= MIN_SIDE:
            mm = _region_mm(region)
            usable.append(((y0, min(y1 + 1, height), x0, min(x1 + 1, width)),
                           mm if mm is not None and _plausible(mm) else spacing_mm))
    warnings = [REGIONS_UNUSED.format(side=MIN_SIDE)] if planar and not usable else []
    return sorted(usable, key=lambda item: item[0][2]), warnings


def _in_cm(region: Dataset) -> bool:
    return region.get("PhysicalUnitsXDirection") == UNITS_CM and region.get("PhysicalUnitsYDirection") == UNITS_CM


def _region_mm(region: Dataset) -> tuple[float, float] | None:
    """A region's (x, y) mm per pixel when it is calibrated in cm with positive pixel sizes, else None."""
    if not (_in_cm(region) and _positive(region.get("PhysicalDeltaX")) and _positive(region.get("PhysicalDeltaY"))):
        return None
    return 10 * float(region.PhysicalDeltaX), 10 * float(region.PhysicalDeltaY)


def _check_inflated_size(data: bytes) -> None:
    """Refuse a deflated file (Deflated Explicit VR Little Endian) whose dataset inflates to more than
    MAX_INFLATED_BYTES, inflating no more than that; its file meta group (never deflated) gives where the
    deflated part starts. Nothing for any other file."""
    start = PREAMBLE + len(MAGIC) if data[PREAMBLE:PREAMBLE + len(MAGIC)] == MAGIC else 0
    if DeflatedExplicitVRLittleEndian.encode() not in data[start:start + 4096]:  # a file meta group is small
        return
    if data[start:start + len(FILE_META_LENGTH)] != FILE_META_LENGTH:
        raise ScanError("This DICOM file is damaged: its deflated contents come without the header's length.")
    (meta_length,) = struct.unpack_from("<I", data, start + len(FILE_META_LENGTH))
    inflater, inflated = zlib.decompressobj(-zlib.MAX_WBITS), 0
    pending = memoryview(data)[start + len(FILE_META_LENGTH) + 4 + meta_length:]
    try:
        while pending and inflated <= MAX_INFLATED_BYTES:  # counted a megabyte at a time, none of it kept
            inflated += len(inflater.decompress(pending, 2 ** 20))
            pending = inflater.unconsumed_tail
    except zlib.error:
        raise ScanError("This DICOM file is damaged: its deflated contents cannot be inflated.") from None
    if inflated > MAX_INFLATED_BYTES:
        raise ScanError(f"This DICOM file's deflated contents inflate to more than {MAX_INFLATED_BYTES // 2 ** 20} "
                        "MB, far more than a scan needs: export it uncompressed or as PNG.")


def _parse(data: bytes) -> Dataset | None:
    _check_inflated_size(data)
    if data[PREAMBLE:PREAMBLE + len(MAGIC)] == MAGIC:
        try:
            return pydicom.dcmread(io.BytesIO(data))
        except Exception:  # pydicom's errors on a broken header are of many kinds
            raise ScanError("This DICOM file is damaged or truncated: its header cannot be read.") from None
    if data[:2] not in HEADERLESS_STARTS:
        return None
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        is_dicom = "SOPClassUID" in dataset or "PixelData" in dataset
    except Exception:  # bytes that merely start like a dataset
        return None
    return dataset if is_dicom else None


def _check_codestream_size(codestream: bytes, columns: int, rows: int) -> None:
    """Refuse a compressed frame whose own header (JPEG's, JPEG 2000's) gives another size than the file's
    Rows and Columns: its decoder allocates what the codestream says, before any check (an 81 kB file whose
    JPEG header claimed 20000 x 20000 took 2.7 GB). Read without decoding (Pillow); codestreams Pillow does
    not parse (RLE, JPEG-LS) are left to their decoders."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(codestream)) as image:
                size = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        size = None  # far more pixels than any Rows x Columns the size check lets through
    except Exception:  # not a codestream Pillow reads: its decoder sizes it by Rows and Columns
        return
    if size != (columns, rows):
        raise ScanError(f"This DICOM image is damaged: its compressed pixel data is not the {columns} x {rows} "
                        "pixels its header says.")


def _without_pixels(dataset: Dataset) -> str:
    """Why a DICOM dataset without pixel data cannot be analysed. pydicom reads a truncated file
    silently up to where it ends, so a file cut short shows as one without pixels: that is told
    apart by what the file says it is. Every DICOM object names its class, and an image's carries pixels."""
    kind = dataset.get("SOPClassUID")
    if not kind:
        return ("This DICOM file is damaged or truncated: it holds no pixel data and does not even say "
                "what kind of object it is.")
    kind = UID(kind)
    if "ImageStorage" in kind.keyword:
        return f"This DICOM image ({kind.name}) holds no pixel data: the file is damaged or truncated."
    return f"This DICOM file ({kind.name}) holds no pixel data: it is not an image, so there is no scan to analyse."


def _transfer_syntax(dataset: Dataset) -> UID:
    """The file's transfer syntax; a dataset without one in its header (written without preamble
    and header, or with a header that omits it) is uncompressed in the encoding its elements were read in."""
    transfer_syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    if transfer_syntax is None:
        implicit_vr, little_endian = dataset.original_encoding
        transfer_syntax = (ImplicitVRLittleEndian if implicit_vr else
                           ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian)
        dataset.ensure_file_meta()
        dataset.file_meta.TransferSyntaxUID = transfer_syntax
    return UID(transfer_syntax)


def _displayed(dataset: Dataset, pixels: np.ndarray) -> np.ndarray:
    """Decoded stored values of one frame -> uint8 greyscale (H, W) or RGB (H, W, 3) as it is meant to be seen."""
    model = str(dataset.PhotometricInterpretation).strip()
    if model in GREY_MODELS and pixels.ndim == 2:
        values = apply_modality_lut(pixels, dataset)
        try:
            values = apply_voi_lut(values, dataset)
        except (ValueError, NotImplementedError, IndexError, AttributeError, struct.error):  # struct: an OW LUT cut short
            pass  # an invalid window or VOI LUT is ignored: the frame is stretched like any wide image
        # float pixel data (Float/Double Float Pixel Data) is scaled like a float TIFF: 0..1 is black..white
        gray = to_8_bit(values, unit_range=np.issubdtype(pixels.dtype, np.floating))
        return 255 - gray if model == "MONOCHROME1" else gray
    if model == "PALETTE COLOR" and pixels.ndim == 2:
        rgb = apply_color_lut(pixels, dataset)[..., :3]
        # A LUT's entries span its whole bit depth, except 8-bit entries stored in 16 bits, which the standard
        # allows (PS3.3 C.7.6.3.1.5): scaled as 16-bit, the scan came out black (input review).
        return _rgb_to_8_bit(rgb, 8 if rgb.max() <= 255 else 8 * rgb.dtype.itemsize)
    if model in COLOUR_MODELS and pixels.ndim == 3 and pixels.shape[-1] == 3:
        return _rgb_to_8_bit(pixels, int(dataset.BitsStored))
    raise ScanError(f"This DICOM image uses the colour model {model!r} with {int(dataset.SamplesPerPixel)} "
                    "sample(s) per pixel, which this app does not read; export it as greyscale or RGB.")


def _rgb_to_8_bit(rgb: np.ndarray, bits: int) -> np.ndarray:
    if bits <= 8:
        return rgb.astype(np.uint8)
    return (rgb.astype(np.float64) * (255 / (2 ** bits - 1))).round().clip(0, 255).astype(np.uint8)


def _calibration(dataset: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """((x, y) mm per pixel, None), or (None, why there is none). Ultrasound regions come first: a
    scanner writes the B-mode field's calibration there, and Pixel Spacing is rarely set in ultrasound.
    A calibration whose pixels are implausibly small or large for a breast scan is a corrupt or
    mistyped one, and is not used: sizes computed from it would be wrong by orders of magnitude."""
    regions = dataset.get("SequenceOfUltrasoundRegions") or []
    planar = [region for region in regions if region.get("RegionSpatialFormat") == REGION_2D]
    in_cm = [region for region in planar if _in_cm(region)]
    sized = [region for region in in_cm if _region_mm(region) is not None]
    fitting = [region for region in sized if _fits(region, int(dataset.Columns), int(dataset.Rows))]
    region_mm = None
    if fitting:
        region_mm = _region_mm(max(fitting, key=_region_area))
        if _plausible(region_mm):
            return region_mm, None
    if (spacing_mm := _spacing_mm(dataset)) is not None and _plausible(spacing_mm):
        return spacing_mm, None
    spacing = _pixel_spacing(dataset)
    if region_mm is not None:
        return None, _implausible("ultrasound image region", region_mm)
    if sized:
        return None, ("the file's ultrasound regions extend beyond the image (was it resized after the scan?), "
                      "so their calibration does not apply")
    if in_cm:
        return None, "the file's ultrasound image regions are in cm but give no valid (positive) pixel size"
    if planar:
        return None, "the file's ultrasound image regions are calibrated in units other than length"
    if spacing_mm is not None:
        return None, _implausible("Pixel Spacing", spacing_mm)
    if spacing is None:
        return None, "the file's Pixel Spacing is not two positive numbers (it holds text)"
    if spacing:
        return None, f"the file's Pixel Spacing is not two positive numbers ({', '.join(map(str, spacing))})"
    return None, "no calibration in the file (neither ultrasound regions in cm nor Pixel Spacing)"


def _spacing_mm(dataset: Dataset) -> tuple[float, float] | None:
    """The file's Pixel Spacing as (x, y) mm per pixel when it is two positive numbers, else None."""
    spacing = _pixel_spacing(dataset)  # mm: between rows (y), then between columns (x)
    if spacing is None or len(spacing) != 2 or not all(_positive(value) for value in spacing):
        return None
    return spacing[1], spacing[0]


def _pixel_spacing(dataset: Dataset) -> list[float] | None:
    """The numbers of the file's Pixel Spacing ([] when it has none), or None when it holds text:
    that is never quoted, since text where numbers belong may be anything, a patient's name included.
    A single number comes from pydicom as a number, not as a list of one."""
    spacing = dataset.get("PixelSpacing")
    values = spacing if isinstance(spacing, MultiValue) else [] if spacing is None else [spacing]
    try:
        return [float(value) for value in values]
    except (TypeError, ValueError):
        return None


def _plausible(mm_per_pixel: tuple[float, float]) -> bool:
    return all(PLAUSIBLE_MM_PER_PIXEL[0] <= size <= PLAUSIBLE_MM_PER_PIXEL[1] for size in mm_per_pixel)


def _implausible(source: str, mm_per_pixel: tuple[float, float]) -> str:
    low, high = PLAUSIBLE_MM_PER_PIXEL
    return (f"the file's {source} gives pixels of {mm_per_pixel[0]:.3g} x {mm_per_pixel[1]:.3g} mm, outside the "
            f"{low:g}–{high:g} mm a breast ultrasound pixel can measure, so this calibration is not used")


def _positive(value) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def _fits(region: Dataset, width: int, height: int) -> bool:
    """Whether the region lies within the image. Its far corner may lie one pixel past the last column or row:
    an end written exclusive where the standard asks for inclusive, which cost the scan its calibration
    (input review); more is a region of another image size (resized after the scan)."""
    corners = [region.get(name) for name in ("RegionLocationMinX0", "RegionLocationMinY0",
                                             "RegionLocationMaxX1", "RegionLocationMaxY1")]
    if None in corners:
        return False
    x0, y0, x1, y1 = (int(value) for value in corners)
    return 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height


def _region_area(region: Dataset) -> int:
    return ((int(region.RegionLocationMaxX1) - int(region.RegionLocationMinX0) + 1)
            * (int(region.RegionLocationMaxY1) - int(region.RegionLocationMinY0) + 1))
