"""Any uploaded file -> 8-bit greyscale scan, or a `ScanError` whose message a user can act on.

Accepted: DICOM (see `inference.dicom`: it also brings the pixel size in millimetres) and whatever
Pillow reads (PNG incl. 16-bit, JPEG, BMP, TIFF, GIF/WebP), in modes 1, L, LA, P, RGB, RGBA, CMYK,
I;16, I, F. Multi-frame files (cine DICOM, animations) give one frame: the first unless another is
asked for, with a warning that says which. EXIF orientation is applied (`upright`). Transparent pixels
are composited onto black (the background of a scan). Images with more than 8 bits per pixel are
stretched from their own range to 0..255, a few outlying pixels left out (floating-point data in 0..1
is scaled by 255, and so is such data that overshoots 1 a little: `UNIT_RANGE_LIMIT`).

Refused: not an image, truncated or corrupt, smaller than MIN_SIDE px on a side, more than
MAX_PIXELS pixels (decompression bombs are refused from the header, before decoding), files over
MAX_BYTES.

Colour: a B-mode ultrasound is greyscale, and a colour image is read as grey. Which pixels are clearly
coloured (channel spread > COLOUR_SPREAD) comes with the grey levels (`DecodedScan.coloured`): the
rule on them (`colour_screening`) is judged inside the ultrasound field the models read, once framing
has found it, since a scanner's screen may put its coloured menus and logos around a grey scan. A
tint is no colour: scanners can show B-mode through a sepia, blue or amber map, which is still
greyscale and is read from the channel that carries its grey levels (`tint_channel`).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

MIN_SIDE = 32
TIFF_MAGIC = (b"II*\0", b"MM\0*")
OUTLIER_FRACTION = 1e-4  # of a wide image's pixels left out of its stretch at each end: 48 of a 600x800 scan
MAX_PIXELS = 16_000_000  # 4000 x 4000: far above any ultrasound; a 36 MP scan took 15 s and 3.7 GB here
MAX_BYTES = 50 * 1024 * 1024
COLOUR_SPREAD = 40
# Of the ultrasound field analysed: over COLOUR_FRACTION coloured, the user is warned; over
# COLOUR_REFUSED_FRACTION, the image gets no answer (a Doppler or elastography box, a heat map or an
# overlay over the scan: the colour read as grey would be read as tissue — the app's own lesion overlay,
# 7 % coloured, and its Grad-CAM, 18 %, were called malignant with a larger lesion under a warning only,
# and a Doppler patch of 4 % grew the lesion without one). The most coloured field of the 1664 scans of the
# three datasets (BUSI's caliper marks) is under COLOUR_FRACTION.
COLOUR_FRACTION = 0.01
COLOUR_REFUSED_FRACTION = 0.05
COLOUR_WARNING = ("This does not look like a greyscale ultrasound ({coloured:.0%} of its ultrasound field is coloured): "
                  "the models read greyscale B-mode breast ultrasound only, and the colour is dropped before they see it.")
COLOUR_REFUSED = ("This image is in colour ({coloured:.0%} of its ultrasound field): a Doppler or elastography image, a "
                  "scan with coloured marks or a heat map over it, or a photo, not a greyscale B-mode scan, which is all "
                  "the models can read. Upload the plain greyscale scan.")
# A tint: of the pixels at least TINT_MIN_LEVEL bright in some channel, TINT_SHARE have a chromaticity
# (r, g, b over their sum) within TINT_TOLERANCE of their median, which is not grey (each part more than
# GREY_TOLERANCE from 1/3). JPEG's colour noise stays inside; a Doppler box leaves the median grey; a photo
# has many hues (at most 0.78 of its pixels near the median in scikit-image's photos).
TINT_MIN_LEVEL = 64
TINT_TOLERANCE = 0.06
TINT_SHARE = 0.95
GREY_TOLERANCE = 0.02
NOT_DICOM = "not a DICOM file; only DICOM files carry the size of a pixel"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive's first bytes (an empty one's too)
REGION_UNCALIBRATED = ("the file's ultrasound region holding the view analysed gives no valid pixel size, and another "
                       "region's (possibly at another depth) does not apply to it")
# Floating-point images whose bright end lies below this are 0..1 images, overshoot and all (a filter's
# ringing, a gain above 1), and are scaled by 255; read as grey levels of 0..255 they would be blank.
UNIT_RANGE_LIMIT = 2.0
# How each value of the EXIF Orientation tag says the stored pixels must be turned to stand upright.
ORIENTATION_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                     4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                     7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
NARROWED_LEVELS = 32  # a 16-bit colour image read to 8 bits that tops out below this kept at most 5 bits of its levels
UNREADABLE_EXIF = ("The file's EXIF data is damaged, so whether the image is stored turned could not be read: it "
                   "was analysed as stored.")


class ScanError(ValueError):
    """The input cannot be analysed; the message says why, in words meant for the user."""


@dataclass
class DecodedScan:
    """A decoded scan and what the file says about it besides its pixels."""
    gray: np.ndarray                          # (H, W) uint8
    warnings: list[str]
    mm_per_pixel: tuple[float, float] | None  # (x: across columns, y: down rows); None when the file has no calibration
    mm_unavailable_reason: str | None         # why mm_per_pixel is None, in words for the user
    frame: int = 0                            # which frame of the file this is (from 0)
    n_frames: int = 1
    coloured: np.ndarray | None = None        # (H, W) bool: clearly coloured pixels; None for a greyscale or tinted image
    # where a DICOM's 2D ultrasound regions say the scan lies, each with its mm per pixel (x, y) or None
    image_regions: list[tuple[tuple[int, int, int, int], tuple[float, float] | None]] = field(default_factory=list)

    def calibration_at(self, box: tuple[int, int, int, int]) -> tuple[tuple[float, float] | None, str | None]:
        """(mm per pixel, why there is none) of the part `box` (top, bottom, left, right) of the scan: that of the
        region holding its centre (two views may be at two depths; an uncalibrated view is not measured with
        the other's pixel size), else the file's."""
        middle_y, middle_x = (box[0] + box[1]) / 2, (box[2] + box[3]) / 2
        for (top, bottom, left, right), mm in self.image_regions:
            if top <= middle_y < bottom and left <= middle_x < right:
                if mm is not None:
                    return mm, None
                if self.mm_per_pixel is not None:  # the file's came from another region
                    return None, REGION_UNCALIBRATED
                break
        return self.mm_per_pixel, self.mm_unavailable_reason


def colour_screening(coloured: np.ndarray | None, box: tuple[int, int, int, int]) -> tuple[str | None, list[str]]:
    """(why the scan gets no answer, or None; the warnings) of the colour inside `box` (top, bottom,
    left, right: the ultrasound field analysed) of a `coloured` map (`DecodedScan.coloured`)."""
    if coloured is None:
        return None, []
    top, bottom, left, right = box
    share = float(coloured[top:bottom, left:right].mean())
    if share > COLOUR_REFUSED_FRACTION:
        return COLOUR_REFUSED.format(coloured=share), []
    return None, [COLOUR_WARNING.format(coloured=share)] if share > COLOUR_FRACTION else []


def _check_bytes(size: int):
    if size > MAX_BYTES:
        raise ScanError(f"The file is {size / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB.")


def _read_bytes(source) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        _check_bytes(len(data))
    else:
        path = Path(source)
        if not path.is_file():
            raise ScanError(f"No file at {path.name!r}.")
        _check_bytes(path.stat().st_size)  # before reading it into memory
        data = path.read_bytes()
    if not data:
        raise ScanError("The file is empty.")
    return data


def check_size(width: int, height: int):
    if width * height > MAX_PIXELS:
        raise ScanError(f"The image is {width}x{height} pixels; the limit is {MAX_PIXELS / 1e6:.0f} megapixels.")
    if min(width, height) < MIN_SIDE:
        raise ScanError(f"The image is {width}x{height} pixels; a scan needs at least {MIN_SIDE} px on each side.")


def to_8_bit(values: np.ndarray, unit_range: bool = False) -> np.ndarray:
    """Greyscale values of any range -> uint8: kept where they lie in 0..255 already, scaled by 255
    with `unit_range` (floating-point images in 0..1, overshoot up to `UNIT_RANGE_LIMIT` saturating),
    else stretched from their own range to 0..255.

    The range leaves out the OUTLIER_FRACTION brightest and darkest pixels, which saturate instead: one
    hot or dead pixel of a 16-bit export (65535 among values up to 4000) would otherwise set the range
    alone and turn the whole scan near-black."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise ScanError("The image holds no numbers (every pixel is NaN or infinite).")
    # A few NaN/infinite pixels (a float TIFF) must not turn the whole scan black: they become the minimum.
    low, high = np.quantile(values[finite], [OUTLIER_FRACTION, 1 - OUTLIER_FRACTION], method="nearest")
    values = np.where(finite, values, low)
    if unit_range and low >= 0 and high < UNIT_RANGE_LIMIT:
        return (values.clip(0, 1) * 255).round().astype(np.uint8)
    if high <= 255 and low >= 0:
        return values.clip(0, 255).round().astype(np.uint8)
    if not unit_range and low >= 0 and values.max() <= 65535 and not np.any(values % 257):
        # An 8-bit image saved as 16 bits, each level x 257 as converters write it: its own 8 bits, not a
        # stretch of its range (that changed its contrast, and the classifier's answer by 5 points).
        return (values / 257).round().astype(np.uint8)
    scaled = (values.clip(low, high) - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    return scaled.round().astype(np.uint8)


def _to_array(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(greyscale uint8 (H, W), which pixels are clearly coloured, or None for none): a tinted greyscale
    (`tint_channel`) gives the channel that carries its grey levels and no colour."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return to_8_bit(np.asarray(image), unit_range=image.mode == "F"), None
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("LA", "RGBA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode in ("1", "L"):
        return np.asarray(image.convert("L")), None
    rgb = image.convert("RGB")
    pixels = np.asarray(rgb)
    coloured = pixels.max(axis=-1).astype(np.int16) - pixels.min(axis=-1) > COLOUR_SPREAD
    if not coloured.any():
        return np.asarray(rgb.convert("L")), None
    channel = tint_channel(pixels)
    if channel is not None:
        return np.ascontiguousarray(pixels[..., channel]), None
    return np.asarray(rgb.convert("L")), coloured


def tint_channel(rgb: np.ndarray) -> int | None:
    """The channel that carries the grey levels of a tinted greyscale scan — a scanner's sepia, blue or
    amber map, where every pixel bright enough to have a colour has the same one — or None when the
    colour is not a tint: mostly grey with colour in places (Doppler, marks), or many colours (a photo).
    Luminance would read a tint as a darker scan (sepia's brightest pixel at about 88 %); the strongest
    channel of a tint is its grey level as the scanner had it."""
    pixels = rgb[rgb.max(axis=-1) >= TINT_MIN_LEVEL].astype(np.float64)
    if not len(pixels):
        return None
    chroma = pixels / pixels.sum(axis=-1, keepdims=True)
    tint = np.median(chroma, axis=0)
    if np.abs(tint - 1 / 3).max() <= GREY_TOLERANCE:
        return None
    if (np.abs(chroma - tint).max(axis=-1) <= TINT_TOLERANCE).mean() < TINT_SHARE:
        return None
    return int(np.argmax(tint))


def upright(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """The image turned as its EXIF Orientation tag says (phones and export tools store a scan sideways
    and say so there), and a warning if the EXIF block cannot be read at all (then: as stored).

    Not Pillow's `ImageOps.exif_transpose`: after turning the pixels it re-writes the whole EXIF block,
    which raises on a malformed tag anywhere in it (a vendor's tag of the wrong type), though only
    the pixels are needed here."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError, struct.error):
        return image, [UNREADABLE_EXIF]
    turn = ORIENTATION_TURNS.get(orientation) if isinstance(orientation, int) else None
    return (image if turn is None else image.transpose(turn)), []


def _stores_16_bit_colour(image: Image.Image) -> bool:
    """Whether the file holds 16-bit samples with colour or transparency (PNG and TIFF can), which
    Pillow, having no such 16-bit mode, reads as their top 8 bits only. Known before loading only:
    loading drops the tiles that say it."""
    raw_modes = [tile.args if isinstance(tile.args, str) else tile.args[0] for tile in image.tile if tile.args]
    return image.mode in ("RGB", "RGBA", "LA") and any(";16" in str(raw_mode) for raw_mode in raw_modes)


def check_frame(frame: int, n_frames: int):
    if not 0 <= frame < n_frames:
        raise ScanError(f"Frame {frame} was asked for, but the file holds {n_frames} frame(s), "
                        f"numbered 0 to {n_frames - 1}.")


def _frame_warnings(frame: int, n_frames: int) -> list[str]:
    """Say which frame of a multi-frame file (a cine loop, an animation) was analysed: the rest were not. How
    to pick another is said for every place the warning reaches (a batch row's said "the Frame slider on
    the Scan tab", which a batch has not: review)."""
    if n_frames == 1:
        return []
    return [f"This file holds {n_frames} frames; only frame {frame} (numbered from 0) was analysed. Another is "
            "picked by the Scan tab's Frame slider or the API's frame argument (/analyze, /report); a batch reads "
            "frame 0."]


def decode(source, frame: int = 0) -> DecodedScan:
    """Bytes, a path, or an (H, W[, C]) array -> DecodedScan of frame `frame` (from 0)."""
    if isinstance(source, np.ndarray):
        check_frame(frame, 1)
        gray, coloured = _decode_array(source)
        return DecodedScan(gray, [], None, NOT_DICOM, coloured=coloured)
    data = _read_bytes(source)
    from inference import dicom  # imported here: it builds on this module's checks

    dicom_frame = dicom.read(data, frame)
    if dicom_frame is not None:
        gray, coloured = _to_array(Image.fromarray(dicom_frame.pixels))
        return DecodedScan(gray, _frame_warnings(frame, dicom_frame.n_frames) + dicom_frame.warnings,
                           dicom_frame.mm_per_pixel, dicom_frame.mm_unavailable_reason, frame, dicom_frame.n_frames,
                           coloured, dicom_frame.image_regions)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            check_size(*image.size)
            # a multi-picture JPEG's (MPO's) further pictures are a camera's previews or depth maps, not frames:
            # the preview was offered as "frame 1" and analysed as a scan (input review)
            n_frames = 1 if image.format == "MPO" else getattr(image, "n_frames", 1)
            check_frame(frame, n_frames)
            image.seek(frame)
            check_size(*image.size)  # a later page of a TIFF may be larger than the first
            narrowed = _stores_16_bit_colour(image)
            image.load()
            image, exif_warnings = upright(image)
    except ScanError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ScanError(f"The image has more than {MAX_PIXELS / 1e6:.0f} megapixels.") from None
    except UnidentifiedImageError:
        if data.startswith(ZIP_MAGIC):
            raise ScanError("This is a zip archive, not a scan: analyse the scans in it as a batch (the app's "
                            "Batch tab, or unpack it for `python -m inference`).") from None
        if data.startswith(TIFF_MAGIC):
            raise ScanError("This TIFF stores its pixels in a form this app cannot read (64-bit floating point, "
                            "say): save the scan as an 8- or 16-bit TIFF or PNG.") from None
        raise ScanError("This file is not an image this app can read (PNG, JPEG, BMP, TIFF, …) nor DICOM.") from None
    # Pillow's words for a damaged file, and, for a multi-page TIFF or an animated GIF cut short while its frames
    # are counted, TypeError ("Missing dimensions"), IndexError and struct.error (input review)
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, struct.error) as error:
        raise ScanError(f"The image file is damaged or truncated ({error}).") from None
    gray, coloured = _to_array(image)
    if narrowed and gray.max() < NARROWED_LEVELS:
        raise ScanError("This image stores 16-bit samples with colour or transparency, its grey levels in their low bits "
                        "(12-bit data, say), and this app reads such samples as their top 8 bits only: save the scan "
                        "as 16-bit greyscale without transparency, or as 8-bit.")
    return DecodedScan(gray, exif_warnings + _frame_warnings(frame, n_frames), None, NOT_DICOM, frame, n_frames,
                       coloured)


def decode_scan(source) -> tuple[np.ndarray, list[str]]:
    """Bytes, a path, or an (H, W[, C]) uint8 array -> (greyscale uint8 (H, W), warnings) of the
    first frame: `decode` for callers that need neither calibration, nor another frame, nor the colour."""
    scan = decode(source)
    return scan.gray, scan.warnings


def _decode_array(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ScanError(f"Expected a greyscale or RGB(A) image array, got shape {array.shape}.")
    check_size(array.shape[1], array.shape[0])
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise ScanError("The image array must hold finite numbers (got booleans, NaN or infinity).")
        # as a file of that depth would be: floats in 0..1 scaled, levels in 0..255 kept, wider ranges
        # (a 12- or 16-bit scan, greyscale or colour) stretched
        array = to_8_bit(array, unit_range=np.issubdtype(array.dtype, np.floating))
    return _to_array(Image.fromarray(array))
