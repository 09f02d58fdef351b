"""Framing: the ultrasound field, aspect-preserving input, and maps back onto the scan."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from inference import preprocess
from inference.decode import decode
from inference.preprocess import (ASKED_VIEW_NOTE, FIELD_MIN_LEVEL, PANEL_MAX_SHARE, PANEL_PLAIN_SHARE, SEVERAL_VIEWS_WARNING,
                                  VIEW_MIN_SIDE, Framing, ViewError, _bar_lines, scan_views, to_model_input,
                                  ultrasound_field, views_notes, views_warnings)
from training.busi import load_scan
from training.split import samples_by_side


def synthetic_screenshot():
    """A 300 x 500 'screenshot': black borders, a B-mode field at rows 40..260, columns 100..420,
    a text strip on the black to its left, and a round lesion inside the field."""
    rng = np.random.default_rng(0)
    gray = np.zeros((300, 500), np.uint8)
    gray[40:260, 100:420] = rng.integers(60, 200, (220, 320))
    gray[50:60, 10:80:3] = 255  # text on the side panel
    yy, xx = np.mgrid[:300, :500]
    lesion = (yy - 150) ** 2 + (xx - 260) ** 2 <= 40 ** 2
    gray[lesion] = 20
    return gray, lesion


def test_the_field_excludes_black_borders_and_panel_text():
    gray, _ = synthetic_screenshot()
    assert ultrasound_field(gray) == (40, 260, 100, 420)


def test_a_viewers_text_lines_on_the_black_beside_the_scan_are_not_the_field():
    """A header line across the screen's top and a status line at its bottom-left, as a viewer shows
    them: each fills a row of the screen but lies beside the scan's columns. The rows' span took them in
    and the screen was analysed whole (newcomer review: a malignant scan called normal 61 %)."""
    gray, _ = synthetic_screenshot()
    gray[8:16, 6:105:3] = 255  # "PACS Viewer - Patient ..." over the screen's top-left
    gray[282:290, 8:90:3] = 255  # "W:255 L:128 Zoom 100%" (columns apart from the side panel's text)
    assert ultrasound_field(gray) == (40, 260, 100, 420)


def on_black_with_caption(gray: np.ndarray, text: str, size: int, gap: int, below: bool) -> tuple[np.ndarray, tuple]:
    """`gray` on a viewer's black screen with `text` (font `size` px) `gap` px under or over its field,
    starting a little inside the field's left edge; and where the scan's own field lands there."""
    top, bottom, left, right = ultrasound_field(gray)
    screen = Image.new("L", (gray.shape[1] + 200, gray.shape[0] + 240), 0)
    screen.paste(Image.fromarray(gray), (100, 120))
    draw, font = ImageDraw.Draw(screen), ImageFont.load_default(size=size)
    box = draw.multiline_textbbox((0, 0), text, font=font)
    y = 120 + bottom + gap if below else 120 + top - gap - (box[3] - box[1])
    draw.multiline_text((100 + left + 5, y - box[1]), text, fill=255, font=font)
    return np.asarray(screen), (top + 120, bottom + 120, left + 100, right + 100)


@pytest.mark.parametrize("text", ["L BREAST 2:00 4CMFN", "RT BREAST 10:00 3 CM FN\nTRANS  LESION 1"])
@pytest.mark.parametrize("size, gap, below", [(11, 20, True), (11, 40, False), (16, 24, True), (16, 60, False)])
def test_a_caption_under_or_over_the_scan_is_not_the_field(examples, text, size, gap, below):
    """A viewer's caption under or over the scan overlaps its columns, so measuring rows within them took
    it in (newcomer review: the scan shrank in the model's input, malignant 46 % -> benign 40 %)."""
    for path, _ in examples[::3]:
        screen, field = on_black_with_caption(np.asarray(Image.open(path).convert("L")), text, size, gap, below)
        assert ultrasound_field(screen) == field, path.name


def beside_a_grey_scale_bar(gray: np.ndarray, length: int | None = None) -> tuple[np.ndarray, tuple]:
    """`gray` on a scanner's black screen with a grey-scale bar (14 px wide, white at the top to black; as tall
    as the field, or `length` px) 20 px to its right, as scanners show one; and where the scan's own field
    lands there."""
    top, bottom, left, right = ultrasound_field(gray)
    length = length or bottom - top
    screen = np.zeros((gray.shape[0] + 160, gray.shape[1] + 300), np.uint8)
    screen[80:80 + gray.shape[0], 150:150 + gray.shape[1]] = gray
    screen[80 + top:80 + top + length, 150 + right + 20:150 + right + 34] = np.linspace(255, 0, length)[:, None]
    return screen, (top + 80, bottom + 80, left + 150, right + 150)


@pytest.mark.parametrize("length", [None, 128])
def test_a_grey_scale_bar_beside_the_scan_is_not_the_field(examples, length):
    """Scanners draw one beside the scan, as tall as it or shorter: taken in, it shrank the scan in the
    models' input (tester: a BUS-UCLM scan's lesion went from drawn to hidden by the bar alone). A depth
    ruler's numbers are still taken in: as sparse as the deep rows some BUSI fields end in, they cannot be
    told apart by how much they fill."""
    for path, _ in examples:
        screen, field = beside_a_grey_scale_bar(np.asarray(Image.open(path).convert("L")), length)
        assert ultrasound_field(screen) == field, path.name


def test_the_datasets_scans_end_in_no_caption(busi_root, bus_uclm_root, breast_root, monkeypatch):
    """Thin lines, depth ticks and dark deep rows end many fields: none of the three datasets' scans may
    frame otherwise for the caption rule, so that training, the reports and serving see the same pixels."""
    scans = [load_scan(s) for source in ("busi", "bus_uclm", "breast")
             for samples in samples_by_side(source).values() for s in samples]
    with_rule = [ultrasound_field(gray) for gray in scans]
    monkeypatch.setattr(preprocess, "CAPTION_MIN_HEIGHT", 10 ** 9)  # no block is a caption, nor a scale strip
    assert len(scans) == 1664 and [ultrasound_field(gray) for gray in scans] == with_rule


def test_a_blank_or_tiny_field_falls_back_to_the_whole_scan():
    assert ultrasound_field(np.zeros((100, 120), np.uint8)) == (0, 100, 0, 120)
    speck = np.zeros((100, 120), np.uint8)
    speck[10:20, 10:20] = 200
    assert ultrasound_field(speck) == (0, 100, 0, 120)


def on_a_page(gray: np.ndarray, level: int, margins=(30, 45, 20, 25)) -> np.ndarray:
    """`gray` pasted on a plain page of grey `level` (top, bottom, left, right margins), with a dark caption
    under it, as a scan pasted into a document or captured from a viewer with a light background."""
    top, bottom, left, right = margins
    page = np.full((gray.shape[0] + top + bottom, gray.shape[1] + left + right), level, np.uint8)
    page[top:top + gray.shape[0], left:left + gray.shape[1]] = gray
    page[-30:-20, left + 5:left + 120:4] = 0  # "Fig. 1" under the scan
    return page


@pytest.mark.parametrize("level", [255, 230, 200])
def test_a_light_page_around_the_scan_is_not_taken_for_the_field(level):
    gray, _ = synthetic_screenshot()
    top, bottom, left, right = ultrasound_field(on_a_page(gray, level))
    assert (top - 30, bottom - 30, left - 20, right - 20) == ultrasound_field(gray) == (40, 260, 100, 420)
    pre_cropped = np.random.default_rng(1).integers(40, 220, (200, 300)).astype(np.uint8)  # all field, as BrEaST's
    assert ultrasound_field(on_a_page(pre_cropped, level)) == (30, 230, 20, 320)


@pytest.mark.parametrize("below", [True, False])
def test_a_caption_wider_than_the_scan_on_a_page_is_not_the_field(examples, below):
    """A figure's caption under (or over) a scan pasted into a document reaches across a narrow scan, past the
    share of the field a caption on black may span (dark deep rows do too); taken in, the scan shrank in the
    models' input (tester: malignant -> benign). On a page the page lies between its letters."""
    font = ImageFont.load_default(size=18)
    for path, _ in examples:
        gray = np.asarray(Image.open(path).convert("L"))
        top, bottom, left, right = ultrasound_field(gray)
        page = Image.new("L", (gray.shape[1] + 110, gray.shape[0] + 150), 255)
        page.paste(Image.fromarray(gray), (80, 60 if below else 90))
        text = "Figure 3. Left breast, 10 o'clock, radial view, a solid hypoechoic mass with angular margins."
        ImageDraw.Draw(page).text((80, 60 + gray.shape[0] + 30 if below else 40), text, fill=20, font=font)
        shift = 60 if below else 90
        assert ultrasound_field(np.asarray(page)) == (top + shift, bottom + shift, left + 80, right + 80), path.name


def test_a_plain_band_along_one_edge_stays_part_of_the_scan():
    """Some scanners export a plain band along one edge (BUSI has such scans): not a page margin, so the
    scan frames as it did in training."""
    field = np.random.default_rng(2).integers(40, 220, (200, 300)).astype(np.uint8)
    field[-40:] = 90
    assert ultrasound_field(field) == (0, 200, 0, 300)


def test_an_example_scan_on_a_page_gets_the_scans_own_results(analyzer, examples):
    for path, _ in examples[::4]:
        gray = np.asarray(Image.open(path).convert("L"))
        alone, pasted = analyzer.analyze(gray), analyzer.analyze(on_a_page(gray, 255))
        assert not pasted.withheld and pasted.predicted_class == alone.predicted_class, path.name
        np.testing.assert_allclose(pasted.probabilities, alone.probabilities, atol=1e-4)
        assert pasted.mask()[30:30 + gray.shape[0], 20:20 + gray.shape[1]].sum() == alone.mask().sum()


TITLE_BARS = {"grey": (51, 51, 51), "blue": (8, 58, 90), "teal": (0, 96, 96)}


def on_a_screen(gray: np.ndarray, level: int, bar: str, chrome: str = "title") -> tuple[np.ndarray, tuple]:
    """`gray` on a scanner's or viewer's plain screen of grey `level` (RGB), under a title bar of colour `bar`
    (`TITLE_BARS`) with white text across it; with `chrome` "status", a status bar of that colour along the
    bottom too, with "border", a window's 1-px grey border round it all; and where the scan's own field
    lands there."""
    top, bottom, left, right = ultrasound_field(gray)
    screen = Image.new("RGB", (gray.shape[1] + 400, gray.shape[0] + 180), (level,) * 3)
    screen.paste(Image.fromarray(gray).convert("RGB"), (150, 90))
    draw, font = ImageDraw.Draw(screen), ImageFont.load_default(size=14)
    draw.rectangle((0, 0, screen.width, 44), fill=TITLE_BARS[bar])
    draw.text((12, 14), "ACME Sono X7   L12-5   Breast   MI 1.1  TIS 0.4   12/03/2025 10:41", fill="white", font=font)
    if chrome == "status":
        draw.rectangle((0, screen.height - 40, screen.width, screen.height), fill=TITLE_BARS[bar])
        draw.text((12, screen.height - 28), "Freeze   Measure   Annotate   Body mark", fill="white", font=font)
    if chrome == "border":
        draw.rectangle((0, 0, screen.width - 1, screen.height - 1), outline=(160, 160, 160))
    return np.asarray(screen), (top + 90, bottom + 90, left + 150, right + 150)


@pytest.mark.parametrize("level", [18, 32])
@pytest.mark.parametrize("bar", sorted(TITLE_BARS))
@pytest.mark.parametrize("chrome", ["title", "status", "border"])
def test_a_plain_screen_of_any_dark_grey_and_its_title_bar_are_not_the_field(examples, level, bar, chrome):
    """A dark theme's screen (#121212-#202020) is above the black FIELD_MIN_LEVEL leaves out: taken for
    image, the whole screen was the field and a lesion was outlined in the scan's shadow (tester). A
    coloured title bar is no field either: taken in, it got a grey scan refused as in colour. With a status
    bar along the bottom too, or a window's border round the picture, the screen is still found (testers)."""
    for path, _ in examples[::3]:
        screen, field = on_a_screen(np.asarray(Image.open(path).convert("L")), level, bar, chrome)
        decoded = decode(screen)
        assert ultrasound_field(decoded.gray, decoded.coloured) == field, path.name


def test_an_example_scan_on_a_dark_screen_gets_the_scans_own_results(analyzer, examples):
    for path, _ in examples[::4]:
        gray = np.asarray(Image.open(path).convert("L"))
        screen, (top, _, left, _) = on_a_screen(gray, 32, "blue")
        alone, shown = analyzer.analyze(gray), analyzer.analyze(screen)
        assert not shown.withheld and shown.predicted_class == alone.predicted_class, path.name
        np.testing.assert_allclose(shown.probabilities, alone.probabilities, atol=1e-4)
        assert shown.mask()[90:90 + gray.shape[0], 150:150 + gray.shape[1]].sum() == alone.mask().sum()


def test_the_datasets_scans_frame_alike_with_their_colour_known(busi_root, bus_uclm_root, breast_root):
    """Training frames the datasets' scans from their grey levels; serving also leaves clearly coloured
    pixels (`DecodedScan.coloured`) out of the field search. No scan of the three datasets (1664; BUSI's
    have coloured caliper marks) may frame otherwise for it, so that both see the same pixels."""
    scans = [decode(s.path) for source in ("busi", "bus_uclm", "breast")
             for samples in samples_by_side(source).values() for s in samples]
    coloured = [scan for scan in scans if scan.coloured is not None]
    assert len(scans) == 1664 and coloured, "some scans carry colour"
    assert [scan_views(scan.gray, scan.coloured) for scan in coloured] == [scan_views(scan.gray) for scan in coloured]


@pytest.mark.parametrize("crop, keep", [(True, True), (False, True), (True, False), (False, False)])
def test_a_mask_survives_the_round_trip(crop, keep):
    gray, lesion = synthetic_screenshot()
    framing = Framing.of(gray, 224, crop_to_field=crop, keep_aspect=keep)
    back = framing.to_scan(framing.to_input(lesion.astype(np.uint8) * 255) / 255.0) > 0.5
    assert back.shape == lesion.shape
    assert (back & lesion).sum() / (back | lesion).sum() > 0.95


def test_keep_aspect_pads_instead_of_stretching():
    gray, lesion = synthetic_screenshot()
    framing = Framing.of(gray, 224, crop_to_field=True, keep_aspect=True)
    assert framing.inner == (154, 224) and framing.offset == (35, 0)  # 220 x 320 field -> 154 x 224
    square = framing.to_input(lesion.astype(np.uint8) * 255) > 127
    rows, cols = np.flatnonzero(square.any(axis=1)), np.flatnonzero(square.any(axis=0))
    assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 2, "a round lesion stays round"
    assert not to_model_input(gray, framing)[:30].any(), "padding is black"


def test_stretch_is_the_first_models_framing():
    gray, _ = synthetic_screenshot()
    framing = Framing.for_model(gray, {"input_size": 224})
    expected = np.asarray(Image.fromarray(gray).resize((224, 224), Image.Resampling.BILINEAR), np.float32)
    assert np.array_equal(to_model_input(gray, framing)[..., 0], expected)


def test_maps_outside_the_field_are_zero():
    gray, _ = synthetic_screenshot()
    framing = Framing.of(gray, 224, crop_to_field=True, keep_aspect=True)
    heat = framing.to_scan(np.ones((7, 7), np.float32))
    assert heat[:40].max() == 0 and heat[:, :100].max() == 0 and heat[100:200, 150:350].min() > 0.99


def test_clahe_from_the_config_evens_out_scanner_gain_and_keeps_the_padding_black():
    """The same tissue at a low gain and narrow range, as another scanner might show it: equalised,
    its contrast comes much closer to the original's; masks and maps are framed as without it."""
    gray, lesion = synthetic_screenshot()
    dim = gray.copy()
    dim[40:260, 100:420] = (gray[40:260, 100:420] * 0.35 + 13).astype(np.uint8)
    framing = {"crop_to_field": True, "keep_aspect": True}

    def field_contrast(image, config_framing):
        f = Framing.for_model(image, {"input_size": 224, "framing": config_framing})
        square = to_model_input(image, f)[..., 0]
        assert not square[:30].any(), "padding is black"
        return square[f.offset[0]:f.offset[0] + f.inner[0]].std(), f

    (plain_dim, _), (plain, plain_framing) = field_contrast(dim, framing), field_contrast(gray, framing)
    (equalised_dim, _), (equalised, clahe_framing) = (field_contrast(dim, framing | {"clahe": True}),
                                                      field_contrast(gray, framing | {"clahe": True}))
    assert clahe_framing.clahe and not plain_framing.clahe
    assert plain_dim / plain < 0.4 and equalised_dim / equalised > 0.8
    assert (clahe_framing.inner, clahe_framing.offset) == (plain_framing.inner, plain_framing.offset)
    mask = lesion.astype(np.uint8) * 255
    assert np.array_equal(clahe_framing.to_input(mask), plain_framing.to_input(mask))


def side_by_side(left: np.ndarray, right: np.ndarray, gutter: int = 16) -> np.ndarray:
    """Two views on one black screen, split by a black gutter, as a dual-view scanner shows them; the
    shorter one centred vertically."""
    height = max(left.shape[0], right.shape[0])
    screen = np.zeros((height, left.shape[1] + gutter + right.shape[1]), np.uint8)
    screen[(height - left.shape[0]) // 2:][:left.shape[0], :left.shape[1]] = left
    screen[(height - right.shape[0]) // 2:][:right.shape[0], left.shape[1] + gutter:] = right
    return screen


def tissue(height: int, width: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 220, (height, width)).astype(np.uint8)


def test_views_side_by_side_are_split_and_the_largest_is_framed():
    dual = side_by_side(tissue(200, 300), tissue(180, 260, seed=4))
    assert scan_views(dual) == [(0, 200, 0, 300), (10, 190, 316, 576)]
    framing = Framing.of(dual, 224, crop_to_field=True, keep_aspect=True)
    assert (framing.box, framing.views, framing.view) == ((0, 200, 0, 300), 2, "left")
    assert ultrasound_field(dual) == (0, 200, 0, 576)  # the field itself still spans both
    right_larger = side_by_side(tissue(150, 260), tissue(200, 300, seed=4))
    framing = Framing.of(right_larger, 224, crop_to_field=True, keep_aspect=True)
    assert (framing.view, views_warnings(framing)) == ("right", [SEVERAL_VIEWS_WARNING.format(views=2, view="right",
                                                                                              why="the largest")])
    assert Framing.of(dual, 224).views == 1  # a model that does not crop to the field sees the whole scan
    asked = Framing.of(dual, 224, crop_to_field=True, keep_aspect=True, view=1)
    assert (asked.box, asked.view, asked.view_index, asked.asked) == ((10, 190, 316, 576), "right", 1, True)
    assert views_warnings(asked) == [] and views_notes(asked) == [ASKED_VIEW_NOTE.format(views=2, view="right", index=1)]
    with pytest.raises(ViewError, match="View 2 was asked for, but this image shows 2 views side by side, numbered 0 to 1"):
        Framing.of(dual, 224, crop_to_field=True, view=2)
    with pytest.raises(ViewError, match="shows one view"):
        Framing.of(dual, 224, view=1)
    assert Framing.of(dual, 224, view=0).box == (0, 200, 0, 576)


def test_views_apart_by_a_grey_line_are_split_and_a_plain_edge_band_is_not():
    """A viewer may set two views apart by a thin grey line instead of black: read as one image, a
    malignant view beside a benign one was read benign at 87 % with no word of two views. A plain band
    along one edge (some scanners export one) is no gutter: no view lies beyond it."""
    screen = np.concatenate([tissue(200, 300), np.full((200, 3), 90, np.uint8), tissue(200, 260, seed=4)], axis=1)
    assert scan_views(screen) == [(0, 200, 0, 300), (0, 200, 303, 563)]
    banded = tissue(200, 300)
    banded[:, 270:] = 90
    assert scan_views(banded) == [(0, 200, 0, 300)]


def test_a_viewers_bars_are_not_part_of_the_field():
    """A screenshot of a viewer: a tool bar (plain grey with words) above the scan and a plain side
    panel beside it, each apart from the scan by black. Read as image, the bar made the field the whole
    screen. Tissue is never plain: the skin and fat above a wide anechoic cyst stay in the field."""
    rng = np.random.default_rng(5)
    screen = np.zeros((300, 520), np.uint8)
    screen[:24] = 62
    screen[6:18, 10:200][rng.random((12, 190)) < 0.3] = 230  # menu words
    screen[60:260, 100:400] = tissue(200, 300)
    screen[40:280, 460:] = 50  # a side panel
    assert ultrasound_field(screen) == (60, 260, 100, 400) and scan_views(screen) == [(60, 260, 100, 400)]
    lined = np.zeros((200, 306), np.uint8)
    lined[:, :300] = tissue(200, 300)
    lined[:, 304:] = 90  # a border line 2 px wide beyond a black column (some exports end so): no bar
    assert ultrasound_field(lined) == (0, 200, 0, 306)
    cyst = np.zeros((260, 300), np.uint8)
    cyst[30:230] = tissue(200, 300)
    cyst[50:80] = 0  # black across the field under 20 rows of skin and fat
    assert ultrasound_field(cyst) == (30, 230, 0, 300)


@pytest.mark.parametrize("level, ink, right", [(200, 0, True), (255, 30, False)])
def test_a_light_information_panel_apart_from_the_scan_is_not_the_field(examples, level, ink, right):
    """A viewer's light panel of patient and settings text, a third as wide as the scan (a quarter of the
    screen, past the 0.15 a bar may span), a black gap away: taken in, it shrank the scan in the models'
    input and changed the class (alignment audit). Measured within its own rows, not the screen's black."""
    font = ImageFont.load_default(size=14)
    lines = ["Patient: ANONYMOUS  ID 0042", "L BREAST 10:00 3CMFN", "Gain 52 dB  Depth 4.0 cm", "Freq 12 MHz  DR 60"]
    for path, _ in examples:
        gray = np.asarray(Image.open(path).convert("L"))
        height, width = gray.shape
        panel = Image.new("L", (int(0.35 * width), height), level)
        for row in range(0, height - 20, 20):
            ImageDraw.Draw(panel).text((8, row + 4), lines[(row // 20) % len(lines)], fill=ink, font=font)
        screen = np.zeros((height + 40, width + panel.width + 55), np.uint8)
        left = 20 if right else 35 + panel.width
        screen[20:20 + height, left:left + width] = gray
        panel_left = left + width + 15 if right else 20
        screen[20:20 + height, panel_left:panel_left + panel.width] = np.asarray(panel)
        top, bottom, field_left, field_right = ultrasound_field(gray)
        assert ultrasound_field(screen) == (top + 20, bottom + 20, field_left + left, field_right + left), path.name


def test_one_view_with_a_panel_a_strip_or_a_shadow_is_not_split():
    gray, _ = synthetic_screenshot()
    assert scan_views(gray) == [ultrasound_field(gray)]
    with_strip = side_by_side(tissue(200, 300), tissue(200, 90))  # a narrow strip (a scale, a small inset)
    assert scan_views(with_strip) == [(0, 200, 0, 406)]
    with_panel = side_by_side(tissue(200, 300), np.where(tissue(200, 250) > 200, 255, 0).astype(np.uint8))  # sparse text
    assert len(scan_views(with_panel)) == 1
    shadowed = tissue(200, 300)
    shadowed[40:, 140:160] = 0  # a posterior acoustic shadow: dark below the lesion, not through the skin line
    assert scan_views(shadowed) == [(0, 200, 0, 300)]
    cyst = tissue(200, 300)
    cyst[85:115, 5:295] = 0  # a wide anechoic cyst: black across the field, between tissue above and below
    assert scan_views(cyst) == [(0, 200, 0, 300)]


def test_a_dual_view_screen_gets_the_left_views_own_results_and_says_so(analyzer, examples):
    for path, _ in examples[::4]:
        gray = np.asarray(Image.open(path).convert("L"))
        alone = analyzer.analyze(gray)
        dual = analyzer.analyze(side_by_side(gray, gray[:, ::-1]))
        assert dual.predicted_class == alone.predicted_class, path.name
        np.testing.assert_allclose(dual.probabilities, alone.probabilities, atol=1e-4)
        assert dual.mask()[:, :gray.shape[1]].sum() == alone.mask().sum() and not dual.mask()[:, gray.shape[1]:].any()
        same_size = SEVERAL_VIEWS_WARNING.format(views=2, view="left",
                                                 why="the leftmost of the largest, which are the same size")
        assert same_size in dual.warnings
        assert not any("views" in warning for warning in alone.warnings)
        probabilities, warnings, _ = analyzer.classify(side_by_side(gray, gray[:, ::-1]))
        np.testing.assert_allclose(probabilities, alone.probabilities, atol=1e-4)
        assert same_size in warnings
        mirrored = analyzer.analyze(gray[:, ::-1])  # the other view, asked for, gets its own results
        other = analyzer.analyze(side_by_side(gray, gray[:, ::-1]), view=1)
        np.testing.assert_allclose(other.probabilities, mirrored.probabilities, atol=1e-4)
        assert other.mask()[:, -gray.shape[1]:].sum() == mirrored.mask().sum() and not other.mask()[:, :gray.shape[1]].any()


def test_the_segmenter_framed_as_the_classifier_gets_the_framing_its_own_search_gives(analyzer, examples):
    """The segmenter's framing is the classifier's at the segmenter's input size (`Framing.at_size`: the scan's
    views are searched once, not once per model), and that is what framing it alone would give: examples,
    each view of two side by side, and a scan on a dark screen."""
    gray = np.asarray(Image.open(examples[0][0]).convert("L"))
    pictures = [(path, None) for path, _ in examples] + [(side_by_side(gray, gray[:, ::-1]), view) for view in (0, 1)]
    pictures.append((on_a_screen(gray, 22, "blue")[0], None))
    for picture, view in pictures:
        decoded = decode(picture)
        prepared = analyzer.prepare(decoded, view)
        assert prepared.seg_framing == Framing.for_model(decoded.gray, analyzer.segmenter.config, view, decoded)
        assert prepared.seg_framing.size == analyzer.segmenter.config["input_size"] != prepared.class_framing.size


# How viewers set two views apart: a black gutter, or a plain line of some grey (a dark or mid grey,
# or white), from 2 pixels wide.
SEPARATORS = {"black gutter, 8 px": (8, 0), "grey line, 6 px": (6, 90), "dark grey line, 2 px": (2, 40),
              "white line, 4 px": (4, 255)}


def test_no_training_scan_splits_and_validation_scans_side_by_side_do(busi_root, bus_uclm_root):
    """The real scans of both training sources (all but their test sides) show one view each: none may
    split. Validation scans put side by side in pairs, as a viewer shows two scans (each with its own
    borders and panels, the shorter at the top), apart by each of SEPARATORS, must split into the two
    scans' own fields, except where one is narrower than VIEW_MIN_SIDE of the pair."""
    sides = [samples_by_side(source) for source in ("busi", "bus_uclm")]
    held_in = [load_scan(s) for by_side in sides for side in ("train", "val", "excluded") for s in by_side.get(side, [])]
    assert len(held_in) == 1208 and all(len(scan_views(gray)) == 1 for gray in held_in)
    # Nor does any have a viewer's bar: framing them is as it was when the models were trained.
    assert not any(_bar_lines(gray, gray > FIELD_MIN_LEVEL).any()
                   or _bar_lines(gray.T, gray.T > FIELD_MIN_LEVEL, PANEL_MAX_SHARE, PANEL_PLAIN_SHARE).any() for gray in held_in)
    validation = [load_scan(s) for by_side in sides for s in by_side["val"]]
    order = np.random.default_rng(0).permutation(len(validation))
    for name, (width, level) in SEPARATORS.items():
        split = narrow = 0
        for left, right in zip(order[0::2], order[1::2]):
            left, right = validation[left], validation[right]
            screen = np.zeros((max(left.shape[0], right.shape[0]), left.shape[1] + width + right.shape[1]), np.uint8)
            screen[:left.shape[0], :left.shape[1]] = left
            screen[:, left.shape[1]:left.shape[1] + width] = level
            screen[:right.shape[0], left.shape[1] + width:] = right
            right_field = ultrasound_field(right)
            expected = [ultrasound_field(left), (*right_field[:2], right_field[2] + left.shape[1] + width,
                                                 right_field[3] + left.shape[1] + width)]
            views = scan_views(screen)
            widths = [box[3] - box[2] for box in expected]
            if min(widths) < VIEW_MIN_SIDE * (expected[1][3] - expected[0][2]):
                narrow += 1
                continue
            assert len(views) == 2 and np.abs(np.subtract(views, expected)).max() <= 2, (name, views, expected)
            split += 1
        assert split >= 100 and narrow <= 2, (name, split, narrow)
