"""Scan -> model input, shared by training and serving so both see the same pixels, and model maps
-> the scan's own size.

Sources frame their scans differently: BUSI and BUS-UCLM are landscape screenshots with black
borders, text and logos around the B-mode field; BrEaST is cropped to the field. A model that sees
each source's framing learns it. So the framing a model was trained with (its config's `framing`)
can crop to the ultrasound field and keep the aspect ratio (the field is scaled to fit the square
input and padded with black); models without that setting stretch the whole scan to the square.
Every map a model returns goes back through the same `Framing`, so masks and Grad-CAM land on the
scan where the model saw them.

Some scanners and viewers show two views of the breast side by side, split by a black gutter or a
plain separator line. Framed whole, each view is shrunk and the models see a layout they never
trained on (an example read malignant at 78 % was read normal beside its mirror image). So the field
is split at such gutters (`scan_views`) and the models see the largest view, or the one a user asks
for; the framing records how many there were, so that the user is told which one was analysed and
that another can be.

Scanners also differ in gain, dynamic range and post-processing. A model's framing may ask for the
placed field to be standardised by contrast-limited adaptive histogram equalisation (`clahe`), so
that a model sees local contrast rather than each scanner's grey-level curve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from skimage.exposure import equalize_adapthist

from inference.decode import DecodedScan, ScanError

FIELD_MIN_LEVEL = 12    # grey level above which a pixel counts as image, not background
FIELD_MIN_SHARE = 0.05  # a row/column belongs to the field when this share of it is image
# A field narrower than this share of the scan is not trusted (a logo or a speck of text on black):
# the whole scan is used. A scan exported on a viewer's black screen can fill a third of it or less,
# and at 0.4 it lost its lesion to the framing; no scan of the three datasets changes between 0.4 and
# this value (their fields span at least 0.4 or the whole image).
FIELD_MIN_SIDE = 0.15
# A light frame (page margins around a pasted scan) is a run of edge rows/columns at one grey level above
# FIELD_MIN_LEVEL: PLAIN_SHARE of each within PLAIN_TOLERANCE of it (room for a caption's few dark pixels).
PLAIN_TOLERANCE = 8
PLAIN_SHARE = 0.95
# A screen background: a scan shown on a viewer's or scanner's plain screen of a grey level above
# FIELD_MIN_LEVEL (dark themes use #121212-#202020) is framed as on black when at least SCREEN_EDGES of the
# picture's four edges show a plain line at one level (BAR_PLAIN_SHARE of it within PLAIN_TOLERANCE of it)
# within BAR_MAX_SHARE of the edge (bars at the top and bottom, a window's border, may lie outside it; a panel
# may break an edge and cross the others: read only at the outermost lines, bars at the top and the bottom
# or a 1-px border had the whole screen framed again, tester). Taken for image,
# such a screen was framed whole: the scan shrank in the models' input and a lesion was outlined in its
# shadow, with no warning (tester). Tissue within PLAIN_TOLERANCE of the screen's level goes with it, so a
# scan's darkest deep rows may fall outside the field; no scan of the three datasets has such a screen.
SCREEN_EDGES = 3
# Pixels within SCREEN_TOLERANCE of the screen's level are background. Measured on the 219 validation scans of
# BUSI and BUS-UCLM on screens under a blue title bar: fields that differ from the scan's own by over 3 px at
# screen levels 13 / 16 / 22 / 30 / 40 were 10 / 14 / 6 / 2 / 0 with 8, 5 / 6 / 1 / 0 / 0 with 3, but with 3 a
# screen saved as JPEG (quality 50) had its noise read as image: 218 / 219 / 219 / 217 / 19 (with 8: 188 / 21 /
# 13 / 28 / 19; near-black screens are the hard case either way).
SCREEN_TOLERANCE = 8
# Two views: a gutter is a run of columns outside the field's share (under FIELD_MIN_SHARE of image
# pixels; a caption across it stays under), and each side of it spans at least VIEW_MIN_SIDE of the
# field's width and has image in at least VIEW_MIN_FILL of its typical column, within its own field
# (tissue, not a text panel or a scale strip). Of the 1208 training, validation and excluded scans of
# BUSI and BUS-UCLM, 20 have such a run of columns inside their field, none with more than 0.22 of the
# field on its narrower side (a side panel, an inset): none splits.
VIEW_MIN_SIDE = 0.3
VIEW_MIN_FILL = 0.5
# A viewer's bar (a menu or tool bar, a status line, a side panel): the first or last run of rows (or
# columns) with image, apart from the rest by background, BAR_MIN_SHARE to BAR_MAX_SHARE of the scan's
# height (width) and plain — BAR_PLAIN_SHARE of its pixels within PLAIN_TOLERANCE of one level above
# FIELD_MIN_LEVEL, words and icons being the rest. None of BUSI's and BUS-UCLM's 1208 training,
# validation and excluded scans has one (their plain bands touch the field). The lower bound came after
# the first evaluation: 7 of BrEaST's scans end in a border line 1–3 px wide beyond a black column,
# which is no bar, and trimming it changed their framing (a decision made on the test side).
# A side panel (columns) may be wider, up to PANEL_MAX_SHARE, as long as the scan beside it is wider still, and hold
# more words, down to PANEL_PLAIN_SHARE plain (lines of 14 px text every 20 px leave 0.8): a viewer's light
# information panel, a quarter of the screen, apart from the scan by a black gap, was taken in and shrank the scan
# (alignment audit: the class changed on 2 of 12 scans). No scan of the three datasets (1664) frames otherwise for
# it. One touching the scan is still taken in: it cannot be told from the plain bands some scanners export along
# one edge.
BAR_MIN_SHARE = 0.02
BAR_MAX_SHARE = 0.15
BAR_PLAIN_SHARE = 0.8
PANEL_MAX_SHARE = 0.4
PANEL_PLAIN_SHARE = 0.7
# A caption: the first or last block of rows (columns) with image — runs under CAPTION_MIN_GAP of the scan's
# height (width) apart are one block, as a caption's lines are — that is a line or a few of text: from
# CAPTION_MIN_HEIGHT px (thinner blocks are border lines and depth ticks, which BUSI's fields end in) to
# CAPTION_MAX_SHARE of the height, apart from the rest by at least CAPTION_GAP_PER_HEIGHT of its own height
# (a scale strip beside one of BrEaST's scans is closer), and across at most CAPTION_MAX_ACROSS of the
# field's width (the rows of a dark deep field that some BUSI scans end in reach across it). A viewer's
# caption over or under the scan, overlapping its columns, taken in with the field shrank the scan within
# the model's input and changed the answer (malignant 46 % -> benign 40 %). No scan of the three datasets
# (1664) frames otherwise for it; captions closer to the scan than about their own height are still taken in.
# A block on a light page (a figure's caption under a scan pasted into a document) may reach across the field:
# the page, not black, lies between its letters (ON_PAGE_SHARE of what is not image in its span), where a dark
# deep field's rows have the scan's black. Taken in, a caption wider than a narrow scan shrank it (tester:
# malignant -> benign on one of four BrEaST scans).
CAPTION_MIN_GAP = 0.01
CAPTION_MIN_HEIGHT = 5
CAPTION_MAX_SHARE = 0.06
CAPTION_GAP_PER_HEIGHT = 0.6
CAPTION_MAX_ACROSS = 0.6
ON_PAGE_SHARE = 0.9
# A scale strip: the grey-scale (or colour-scale) bar a scanner draws beside the scan, a solid run of
# columns (rows) with image apart from the rest by background, CAPTION_MIN_HEIGHT px to SCALE_MAX_SHARE of the
# picture's width (height) across, not the widest run, solid (image right across) in SCALE_MIN_FILL of the rows
# it spans and each of
# those rows one level across it (PLAIN_SHARE of them within 2 x PLAIN_TOLERANCE): a gradient along it, plain
# across. Taken into the field, it shrank the scan in the models' input (tester: a BUS-UCLM scan's lesion went
# from drawn to hidden by a 14 px bar 20 px beside it). No scan of the three datasets has one (a test).
SCALE_MAX_SHARE = 0.03
SCALE_MIN_FILL = 0.5
CLAHE_CLIP_LIMIT = 0.01  # scikit-image's default; its tiles are 1/8 of each side of the placed field


def _near(gray: np.ndarray, level: float) -> np.ndarray:
    """Which pixels of `gray` (uint8) lie within PLAIN_TOLERANCE of `level`: of a plain margin, bar or line."""
    return np.abs(gray.astype(np.int16) - level) <= PLAIN_TOLERANCE


def _plain_run(lines: np.ndarray) -> tuple[int, float]:
    """(how many of `lines`, from one edge of a scan inward, belong to a plain margin, its level): the
    first line's median is the level, and a line belongs when at least PLAIN_SHARE of it lies within
    PLAIN_TOLERANCE of the level."""
    level = float(np.median(lines[0]))
    plain = _near(lines, level).mean(axis=1) >= PLAIN_SHARE
    return (len(plain) if plain.all() else int(np.argmin(plain))), level


def light_frame(gray: np.ndarray) -> tuple[tuple[int, int, int, int], float | None]:
    """((top, bottom, left, right) end-exclusive, level): the scan inside a plain light frame around it —
    the white or grey page margins of a screenshot, a figure or a viewer, which the field search would
    otherwise take for image — and the frame's grey level. A frame runs along all four edges at one
    level above FIELD_MIN_LEVEL: a single plain band along one edge is part of some scans as their
    scanners export them (BUSI has such bands), and those must frame as they did in training. The
    whole scan and None when there is no frame."""
    height, width = gray.shape
    whole = ((0, height, 0, width), None)
    (top, top_level), (bottom, bottom_level) = _plain_run(gray), _plain_run(gray[::-1])
    if not top or not bottom or top + bottom >= height:
        return whole
    columns = gray[top:height - bottom].T
    (left, left_level), (right, right_level) = _plain_run(columns), _plain_run(columns[::-1])
    levels = (top_level, bottom_level, left_level, right_level)
    if (not left or not right or left + right >= width or min(levels) <= FIELD_MIN_LEVEL
            or max(levels) - min(levels) > PLAIN_TOLERANCE):
        return whole
    return (top, height - bottom, left, width - right), float(np.median(levels))


def _plain_levels(lines: np.ndarray) -> np.ndarray:
    """Per line of `lines` (rows, from one edge inward): its level (median) when it is plain (BAR_PLAIN_SHARE
    of it within PLAIN_TOLERANCE of it) and above FIELD_MIN_LEVEL, else NaN."""
    levels = np.median(lines, axis=1)
    plain = _near(lines, levels[:, None]).mean(axis=1) >= BAR_PLAIN_SHARE
    return np.where(plain & (levels > FIELD_MIN_LEVEL), levels, np.nan)


def plain_screen(gray: np.ndarray) -> tuple[float, tuple[int, int, int, int]] | None:
    """(the grey level of a plain screen around the scan (see SCREEN_EDGES), how many lines at the top,
    bottom, left and right lie outside it: bars, a window's border), or None when there is none or it is as
    dark as the black FIELD_MIN_LEVEL already leaves out. Each edge is read from its outermost line inward,
    up to BAR_MAX_SHARE of the picture."""
    height, width = gray.shape
    depth_rows, depth_columns = max(1, int(BAR_MAX_SHARE * height)), max(1, int(BAR_MAX_SHARE * width))
    edges = [_plain_levels(lines) for lines in (gray[:depth_rows], gray[::-1][:depth_rows],
                                                gray.T[:depth_columns], gray.T[::-1][:depth_columns])]
    candidates = np.unique(np.concatenate([edge[~np.isnan(edge)] for edge in edges]))
    showing = [sum(bool((np.abs(edge - level) <= PLAIN_TOLERANCE).any()) for edge in edges) for level in candidates]
    if not showing or max(showing) < SCREEN_EDGES:
        return None
    near = [np.abs(edge - candidates[int(np.argmax(showing))]) <= PLAIN_TOLERANCE for edge in edges]
    level = float(np.median(np.concatenate([edge[at] for edge, at in zip(edges, near)])))
    return level, tuple(int(np.argmax(at)) for at in near)  # 0 where an edge does not show the screen


Box = tuple[int, int, int, int]  # (top, bottom, left, right), end-exclusive
SEVERAL_VIEWS_WARNING = ("This image shows {views} ultrasound views side by side; only the {view} one ({why}) was analysed. "
                         "The Scan tab's View choice or the API's view argument picks another; a batch reads this one.")
# A field whose shorter side is under this many pixels is smaller than any the models learned from (the
# smallest of BUSI's and BUS-UCLM's 1188 training and validation fields is 190 px; of all 1664 scans of the
# three datasets too): the user is warned. Under half of it the scan is refused: a 40 x 33 px thumbnail was
# called malignant at 96 % with a lesion drawn, a 120 x 85 one normal where the full-size scan is malignant.
LOW_RESOLUTION_SIDE = 190
TOO_SMALL_SIDE = LOW_RESOLUTION_SIDE // 2
LOW_RESOLUTION_WARNING = ("This scan is small: its ultrasound field is {width} x {height} pixels, smaller than any the "
                          f"models learned from (at least {LOW_RESOLUTION_SIDE} px on the shorter side), so detail they "
                          "rely on may be missing. Use the scanner's full-size export if you have it.")
TOO_SMALL_MESSAGE = ("This scan is too small to analyse: its ultrasound field is {width} x {height} pixels, under half "
                     f"the smallest the models learned from ({LOW_RESOLUTION_SIDE} px on the shorter side), too "
                     "little detail for an answer. Upload the scanner's full-size export.")
ASKED_VIEW_NOTE = ("This image shows {views} ultrasound views side by side; the {view} one (view {index}), as asked, "
                   "was analysed.")


def _runs(lines: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True in `lines` (bool), end-exclusive."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], lines.astype(np.int8), [0]])))
    return [(int(start), int(end)) for start, end in zip(edges[::2], edges[1::2])]


def _bar_lines(gray: np.ndarray, image: np.ndarray, max_share: float = BAR_MAX_SHARE,
               plain_share: float = BAR_PLAIN_SHARE) -> np.ndarray:
    """(H,) bool: the rows of `gray` (with its `image` pixels) that belong to a viewer's bar at its top
    or bottom (see BAR_MIN_SHARE and the settings after it): at most `max_share` of them, narrower than the
    widest run of image, `plain_share` of it at one level; the columns of a side panel when given the
    transposes (and the PANEL_ settings)."""
    runs = _runs(image.mean(axis=1) >= FIELD_MIN_SHARE)
    widest = max((end - start for start, end in runs), default=0)
    bar = np.zeros(len(gray), bool)
    for start, end in (runs[0], runs[-1]) if len(runs) > 1 else ():
        along = np.flatnonzero(image[start:end].any(axis=0))  # its own extent: black beyond a panel's end is no word
        band = gray[start:end, along[0]:along[-1] + 1]
        level = np.median(band)
        if (BAR_MIN_SHARE * len(gray) <= end - start <= max_share * len(gray) and end - start < widest
                and level > FIELD_MIN_LEVEL and _near(band, level).mean() >= plain_share):
            bar[start:end] = True
    return bar


def _scale_strip_lines(gray: np.ndarray, image: np.ndarray) -> np.ndarray:
    """(H,) bool: the rows of `gray` (with its `image` pixels) that belong to a scale strip (SCALE_MAX_SHARE and
    the settings beside it); the columns of a vertical one when given the transposes."""
    runs = _runs(image.mean(axis=1) >= FIELD_MIN_SHARE)
    widest = max(runs, key=lambda run: run[1] - run[0], default=None)
    strip = np.zeros(len(gray), bool)
    for start, end in runs:
        if (start, end) == widest or not CAPTION_MIN_HEIGHT <= end - start <= SCALE_MAX_SHARE * len(gray):
            continue
        filled = image[start:end].all(axis=0)  # the lines along the strip where it is solid
        along = np.flatnonzero(image[start:end].any(axis=0))
        if filled[along[0]:along[-1] + 1].mean() < SCALE_MIN_FILL:  # solid along its own length
            continue
        band = gray[start:end, filled].astype(np.int16)
        if (band.max(axis=0) - band.min(axis=0) <= 2 * PLAIN_TOLERANCE).mean() >= PLAIN_SHARE:
            strip[start:end] = True
    return strip


def _image_pixels(gray: np.ndarray, coloured: np.ndarray | None = None) -> tuple[Box, np.ndarray, np.ndarray | None]:
    """(the box inside any plain light frame (`light_frame`), which of its pixels are image, which are of the
    frame's page (None without a frame)): image pixels are brighter
    than FIELD_MIN_LEVEL, off a frame's or a plain screen's level (`plain_screen`, whose bars and border
    outside it go too; the page between a caption and the scan is background too), outside a viewer's
    bars (`_bar_lines`: a tool bar read as image made the field the whole screen, and a scan beneath it was
    read shrunk, malignant 78 % → benign 38 %) and scale strips (`_scale_strip_lines`), and not clearly
    `coloured` (a scanner's menus, title bars and logos: a B-mode scan is grey, and a blue title bar taken
    into the field got a grey scan refused as in colour)."""
    (top, bottom, left, right), level = light_frame(gray)
    inner = gray[top:bottom, left:right]
    image = inner > FIELD_MIN_LEVEL
    page = None if level is None else _near(inner, level)
    if page is not None:
        image &= ~page
    screen = plain_screen(inner)  # inside a light frame too: a window's border is one
    if screen is not None:
        level, (above, below, before, after) = screen
        height, width = image.shape
        image[:above] = image[height - below:] = False
        image[:, :before] = image[:, width - after:] = False
        image &= np.abs(inner.astype(np.int16) - level) > SCREEN_TOLERANCE
    image[_bar_lines(inner, image)] = False  # a coloured bar is a bar too: its words go with it
    image[:, _bar_lines(inner.T, image.T, PANEL_MAX_SHARE, PANEL_PLAIN_SHARE)] = False
    image[_scale_strip_lines(inner, image)] = False
    image[:, _scale_strip_lines(inner.T, image.T)] = False
    if coloured is not None:
        image &= ~coloured[top:bottom, left:right]
    return (top, bottom, left, right), image, page


def _is_caption(image: np.ndarray, block: tuple[int, int], gap: int, page: np.ndarray) -> bool:
    """Whether `block` (start, end) of the rows of `image` (bool), at one end, `gap` rows of background
    away from the rest, is a caption (CAPTION_MAX_SHARE and the settings after it; `page`: which pixels
    are of a light page around the scan)."""
    start, end = block
    across = np.flatnonzero(image[start:end].any(axis=0))
    span = (slice(start, end), slice(across[0], across[-1] + 1))
    between = page[span][~image[span]]
    on_page = between.size > 0 and between.mean() >= ON_PAGE_SHARE
    return (CAPTION_MIN_HEIGHT <= end - start <= min(gap / CAPTION_GAP_PER_HEIGHT, CAPTION_MAX_SHARE * len(image))
            and (on_page or across[-1] - across[0] < CAPTION_MAX_ACROSS * image.shape[1]))


def _span(image: np.ndarray, page: np.ndarray) -> tuple[int, int] | None:
    """(first, last + 1) of the rows of `image` (bool) of which at least FIELD_MIN_SHARE is image, less any
    caption at either end (`_is_caption`, with the `page` pixels); None for none."""
    runs = _runs(image.mean(axis=1) >= FIELD_MIN_SHARE)
    if not runs:
        return None
    blocks = [list(runs[0])]  # a caption's lines are one block
    for start, end in runs[1:]:
        if start - blocks[-1][1] < CAPTION_MIN_GAP * len(image):
            blocks[-1][1] = end
        else:
            blocks.append([start, end])
    while len(blocks) > 1 and _is_caption(image, blocks[0], blocks[1][0] - blocks[0][1], page):
        blocks = blocks[1:]
    while len(blocks) > 1 and _is_caption(image, blocks[-1], blocks[-1][0] - blocks[-2][1], page):
        blocks = blocks[:-1]
    return blocks[0][0], blocks[-1][1]


def _field_within(image: np.ndarray, page: np.ndarray | None = None) -> Box | None:
    """The span of rows and columns of `image` (bool) of which at least FIELD_MIN_SHARE is image, or
    None when it is too small to trust (under FIELD_MIN_SIDE of either side). Text panels, logos and
    body markers sit on black and fill far less of their rows and columns than tissue does. The rows
    are measured within the field's columns, then the columns within its rows: a line of a viewer's
    text across a black screen fills a row of the whole screen, beside the scan, and the span took it in
    (the screen analysed whole: a malignant scan called normal). No scan of the three datasets (1664)
    frames otherwise for it. `page`: which pixels are of a light page around the scan (captions on it may
    be wide), or None."""
    height, width = image.shape
    page = np.zeros_like(image) if page is None else page
    cols = _span(image.T, page.T)
    rows = None if cols is None else _span(image[:, cols[0]:cols[1]], page[:, cols[0]:cols[1]])
    cols = None if rows is None else _span(image[rows[0]:rows[1]].T, page[rows[0]:rows[1]].T)
    if (rows is None or cols is None or rows[1] - rows[0] < FIELD_MIN_SIDE * height
            or cols[1] - cols[0] < FIELD_MIN_SIDE * width):
        return None
    return rows[0], rows[1], cols[0], cols[1]


def _offset(box: Box, top: int, left: int) -> Box:
    return box[0] + top, box[1] + top, box[2] + left, box[3] + left


def _field_pixels(gray: np.ndarray, coloured: np.ndarray | None = None) -> tuple[Box, np.ndarray | None]:
    """(the field's box in the scan, which of its pixels are image): the field of image inside any
    plain light frame (`_field_within`); a field too small to trust: everything inside the frame, and
    None for its pixels."""
    frame, image, page = _image_pixels(gray, coloured)
    field = _field_within(image, page)
    if field is None:
        return frame, None
    return _offset(field, frame[0], frame[2]), image[field[0]:field[1], field[2]:field[3]]


def ultrasound_field(gray: np.ndarray, coloured: np.ndarray | None = None) -> Box:
    """(top, bottom, left, right), end-exclusive: the ultrasound field, every view of it together."""
    return _field_pixels(gray, coloured)[0]


def _separator_columns(gray: np.ndarray) -> np.ndarray:
    """(W,) bool: the columns of `gray` (a field) at one grey level above FIELD_MIN_LEVEL from top to
    bottom (PLAIN_SHARE of them within PLAIN_TOLERANCE of their median): a line a viewer draws between
    two views, which no column of tissue is."""
    level = np.median(gray, axis=0)
    plain = _near(gray, level).mean(axis=0) >= PLAIN_SHARE
    return plain & (level > FIELD_MIN_LEVEL)


def _gutter(image: np.ndarray, gray: np.ndarray) -> tuple[int, int] | None:
    """Where a field (`image`, bool, and its `gray`) splits into two views side by side: the first
    gutter (start, end), a run of columns under FIELD_MIN_SHARE of image or of plain separator lines
    (`_separator_columns`; a viewer may draw the views apart by a grey line, not black), with a view
    on each hand (see VIEW_MIN_SIDE), else None. Only columns: a column gutter must cross the near
    field (skin and fat, never black across a breast scan), whereas a row can run through a wide
    anechoic cyst — a stacked split cut one of BUSI's test scans in two at its first evaluation, so
    stacked views are not split."""
    profile = image.mean(axis=0)
    width = len(profile)
    for start, end in _runs((profile < FIELD_MIN_SHARE) | _separator_columns(gray)):
        if (min(start, width - end) >= VIEW_MIN_SIDE * width
                and min(_typical_fill(image[:, :start]), _typical_fill(image[:, end:])) >= VIEW_MIN_FILL):
            return start, end
    return None


def _typical_fill(side: np.ndarray) -> float:
    """The median share of image in the columns of one side of a gutter, within that side's own field
    (a shorter view beside a taller one is measured on its own height); 0 for no field."""
    field = _field_within(side)
    if field is None:
        return 0.0
    return float(np.median(side[field[0]:field[1], field[2]:field[3]].mean(axis=0)))


def _views_within(image: np.ndarray, gray: np.ndarray) -> list[Box]:
    """The views of a field (`image`, bool, and its `gray`, both cut to the field) from left to right,
    each side of a gutter split again and cut to its own field."""
    gutter = _gutter(image, gray)
    if gutter is None:
        return [(0, image.shape[0], 0, image.shape[1])]
    views = []
    for columns in (slice(0, gutter[0]), slice(gutter[1], image.shape[1])):
        part = image[:, columns]
        top, bottom, left, right = _field_within(part) or (0, part.shape[0], 0, part.shape[1])
        inner = (slice(top, bottom), slice(left, right))
        views += [_offset(view, top, left + columns.start)
                  for view in _views_within(part[inner], gray[:, columns][inner])]
    return views


def scan_views(gray: np.ndarray, coloured: np.ndarray | None = None, within: list[Box] = ()) -> list[Box]:
    """The ultrasound field (`ultrasound_field`) split into the views a dual-view scanner or a viewer
    shows side by side, separated by a black gutter or a plain separator line, from left to right; one
    box, the field, for a scan of one view. `within`: the boxes the file says the scan lies in, left to
    right (a DICOM's ultrasound regions, `DecodedScan.image_regions`): the views are looked for in each."""
    if within:
        views = []
        for top, bottom, left, right in within:
            inner = (slice(top, bottom), slice(left, right))
            views += [_offset(view, top, left)
                      for view in scan_views(gray[inner], None if coloured is None else coloured[inner])]
        return views
    field, image = _field_pixels(gray, coloured)
    if image is None:
        return [field]
    return [_offset(view, field[0], field[2]) for view in _views_within(image, gray[field[0]:field[1], field[2]:field[3]])]


def _area(box: Box) -> int:
    return (box[1] - box[0]) * (box[3] - box[2])


def largest_view(views: list[Box]) -> Box:
    """The view with the most pixels; the leftmost on a tie."""
    return max(views, key=_area)


def view_position(place: int, views: int) -> str:
    """Where view number `place` (from 0, left to right) lies among `views` views, in words for a user:
    "left" or "right" of two, else "number 3 from the left"."""
    return ("left", "right")[place] if views == 2 else f"number {place + 1} from the left"


class ViewError(ScanError):
    """A view was asked for that the scan does not show (its message is for the user)."""


def chosen_view(views: list[Box], view: int | None) -> int:
    """Which of `views` (left to right) to frame: `view` (from 0) when asked for, else the largest."""
    if view is None:
        return views.index(largest_view(views))
    if not 0 <= view < len(views):
        shown = "one view" if len(views) == 1 else f"{len(views)} views side by side, numbered 0 to {len(views) - 1}"
        raise ViewError(f"View {view} was asked for, but this image shows {shown}.")
    return view


def resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D array (uint8 or float) to (height, width)."""
    if array.shape == (height, width):
        return array
    mode = "F" if array.dtype != np.uint8 else "L"
    image = Image.fromarray(array.astype(np.float32) if mode == "F" else array, mode=mode)
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))


def _placement(box: Box, size: int, keep_aspect: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """(inner (h, w), offset (top, left)) of the `box` cut from a scan in a `size` x `size` input: stretched
    to the square, or with `keep_aspect` scaled to fit it and centred."""
    box_h, box_w = box[1] - box[0], box[3] - box[2]
    if keep_aspect:
        scale = size / max(box_h, box_w)
        inner = (max(1, round(box_h * scale)), max(1, round(box_w * scale)))
    else:
        inner = (size, size)
    return inner, ((size - inner[0]) // 2, (size - inner[1]) // 2)


@dataclass(frozen=True)
class Framing:
    """How a scan of `scan_shape` became a `size` x `size` model input: the `box` cut from it (top,
    bottom, left, right) was resized to `inner` (h, w) and placed at `offset` (top, left); with
    `clahe`, the placed field of a scan (not of a mask) is equalised. A scan showing several views
    (`scan_views`) is framed on one: `views` says how many there were, `view_index` which one (from 0,
    left to right; `view` says where in words), `asked` whether a user chose it (else it is the largest)
    and `larger_than_the_rest` whether it was strictly the largest (else the leftmost of equals)."""

    scan_shape: tuple[int, int]
    box: tuple[int, int, int, int]
    size: int
    inner: tuple[int, int]
    offset: tuple[int, int]
    clahe: bool = False
    views: int = 1
    larger_than_the_rest: bool = True
    view_index: int = 0
    asked: bool = False

    @classmethod
    def of(cls, gray: np.ndarray, size: int, crop_to_field: bool = False, keep_aspect: bool = False,
           clahe: bool = False, view: int | None = None, decoded: DecodedScan | None = None) -> Framing:
        """`view`: which view to frame (from 0, left to right; None: the largest); a model that does not
        crop to the field sees the whole scan as one view. `decoded`: what the file says besides `gray`
        (its coloured pixels, which the field search leaves out, and where a DICOM says the scan lies,
        where it looks: `scan_views`). Raises ViewError for a view not shown."""
        height, width = gray.shape
        coloured, within = (None, ()) if decoded is None else (decoded.coloured, [box for box, _ in decoded.image_regions])
        views = scan_views(gray, coloured, within) if crop_to_field else [(0, height, 0, width)]
        index = chosen_view(views, view)
        box = views[index]
        larger = sum(_area(other) == _area(box) for other in views) == 1
        return cls((height, width), box, size, *_placement(box, size, keep_aspect), clahe, len(views), larger, index,
                   view is not None)

    def at_size(self, size: int, keep_aspect: bool) -> Framing:
        """This framing (field, view, equalisation) for a model of input size `size`: a segmenter framed as the
        classifier is, at another size, need not search the scan for its views again (27 ms of a 1280 x 800
        screen's analysis)."""
        return replace(self, size=size, **dict(zip(("inner", "offset"), _placement(self.box, size, keep_aspect))))

    @property
    def view(self) -> str:
        """Where the framed view lies among the scan's views, in words ("left", "right", ...); "" for one view."""
        return view_position(self.view_index, self.views) if self.views > 1 else ""

    @classmethod
    def for_model(cls, gray: np.ndarray, config: dict, view: int | None = None,
                  decoded: DecodedScan | None = None) -> Framing:
        """The framing a model's config asks for (none: the whole scan stretched to the square), on view
        `view` (`of`)."""
        framing = config.get("framing", {})
        return cls.of(gray, config["input_size"], framing.get("crop_to_field", False), framing.get("keep_aspect", False),
                      framing.get("clahe", False), view, decoded)

    def resized(self, scan_shape: tuple[int, int]) -> Framing:
        """The same framing for the scan resized to `scan_shape` (maps drawn on a smaller copy)."""
        scale_y, scale_x = scan_shape[0] / self.scan_shape[0], scan_shape[1] / self.scan_shape[1]
        top, bottom, left, right = self.box
        box = (round(top * scale_y), max(round(bottom * scale_y), round(top * scale_y) + 1),
               round(left * scale_x), max(round(right * scale_x), round(left * scale_x) + 1))
        return replace(self, scan_shape=tuple(scan_shape), box=box)

    def to_input(self, array: np.ndarray) -> np.ndarray:
        """A (H, W) scan or mask -> (size, size), same dtype; black (0) outside the placed field."""
        top, bottom, left, right = self.box
        placed = resize(array[top:bottom, left:right], *self.inner)
        square = np.zeros((self.size, self.size), dtype=placed.dtype)
        square[self.offset[0]:self.offset[0] + self.inner[0], self.offset[1]:self.offset[1] + self.inner[1]] = placed
        return square

    def to_scan(self, field: np.ndarray) -> np.ndarray:
        """A map over the model input (any resolution, e.g. Grad-CAM's 7 x 7) -> float32 (H, W) at
        the scan's size; 0 outside the ultrasound field."""
        square = resize(np.asarray(field, dtype=np.float32), self.size, self.size)
        inside = square[self.offset[0]:self.offset[0] + self.inner[0], self.offset[1]:self.offset[1] + self.inner[1]]
        top, bottom, left, right = self.box
        out = np.zeros(self.scan_shape, dtype=np.float32)
        out[top:bottom, left:right] = resize(inside, bottom - top, right - left)
        return out


def views_warnings(framing: Framing) -> list[str]:
    """What a user is warned of a scan that showed several views: that only one was analysed, unless
    they asked for it (`views_notes`)."""
    if framing.views == 1 or framing.asked:
        return []
    why = "the largest" if framing.larger_than_the_rest else "the leftmost of the largest, which are the same size"
    return [SEVERAL_VIEWS_WARNING.format(views=framing.views, view=framing.view, why=why)]


def views_notes(framing: Framing) -> list[str]:
    """What a user is told of a scan that showed several views, one of which they asked for: which was read
    (a note: nothing is amiss, so no warning)."""
    if framing.views == 1 or not framing.asked:
        return []
    return [ASKED_VIEW_NOTE.format(views=framing.views, view=framing.view, index=framing.view_index)]


def resolution_screening(framing: Framing) -> tuple[str | None, list[str]]:
    """(why the scan gets no answer, or None; the warnings) of the size of the field analysed: under
    TOO_SMALL_SIDE on its shorter side no answer, under LOW_RESOLUTION_SIDE a warning (a thumbnail's
    answers drifted — malignant 46 % at full size, benign 40 % at 200 x 142 px, normal at 120 x 85 —
    without a word)."""
    top, bottom, left, right = framing.box
    side, size = min(bottom - top, right - left), dict(width=right - left, height=bottom - top)
    if side < TOO_SMALL_SIDE:
        return TOO_SMALL_MESSAGE.format(**size), []
    return None, [LOW_RESOLUTION_WARNING.format(**size)] if side < LOW_RESOLUTION_SIDE else []


def to_model_input(gray: np.ndarray, framing: Framing) -> np.ndarray:
    """(H, W) uint8 greyscale -> (size, size, 3) float32 RGB in 0..255 (models scale it themselves)."""
    square = framing.to_input(gray).astype(np.float32)
    if framing.clahe:  # the field only: equalising the black padding would light it up
        (top, left), (height, width) = framing.offset, framing.inner
        field = square[top:top + height, left:left + width]
        square[top:top + height, left:left + width] = 255 * equalize_adapthist(field / 255, clip_limit=CLAHE_CLIP_LIMIT)
    return np.repeat(square[..., None], 3, axis=-1)
