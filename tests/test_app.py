"""The app: its handlers in-process, a live server through gradio_client, and a real browser."""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from bench.server import AppServer, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXAMPLE_UPLOAD = Path(app.EXAMPLES_DIR) / "busi_benign_354.png"  # the model calls it benign (0.99)


@pytest.fixture(scope="module")
def handlers(analyzer):
    return app.Handlers(analyzer)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def upload_copy(path, tmp_path):
    """What Gradio hands the app: a copy of the upload in its temp folder."""
    folder = Path(os.environ["GRADIO_TEMP_DIR"]) / tmp_path.name
    folder.mkdir(parents=True, exist_ok=True)
    return str(shutil.copy(path, folder / Path(path).name))


def test_analyze_returns_every_output(handlers, examples, tmp_path):
    path, truth = next((p, t) for p, t in examples if t == "malignant")
    label, class_cam, overlay, mask, report, seg_cam, notes = handlers.analyze(upload_copy(path, tmp_path))
    height, width = np.asarray(Image.open(path)).shape[:2]
    assert abs(sum(label.values()) - 1) < 1e-5 and set(label) == {"normal", "benign", "malignant"}
    assert Image.open(class_cam).format == Image.open(overlay).format == "JPEG"
    assert pixels(class_cam).shape == pixels(overlay).shape == (height, width, 3)
    assert Image.open(mask).format == "PNG" and pixels(mask).shape == (height, width)
    assert set(np.unique(pixels(mask))) <= {0, 255}
    assert report["predicted_class"] in label and report["lesion"]["lesion_area_px"] == int((pixels(mask) == 255).sum())
    assert seg_cam is None or pixels(seg_cam).shape == (height, width, 3)
    assert isinstance(notes, str)


def test_the_same_upload_serves_several_requests(handlers, examples, tmp_path):
    """Upload (auto-analysis), then Analyse, then an API call on the identical file: Gradio hands all
    of them one path, so no request may delete it (Gradio's cache cleaner does, later)."""
    upload = upload_copy(examples[1][0], tmp_path)
    state, *_ = handlers.analyze_and_store(upload)
    again, *_ = handlers.analyze_and_store(upload)
    label, *_ = handlers.analyze(upload)
    assert state.predicted_class == again.predicted_class == max(label, key=label.get)
    assert Path(upload).exists()


def test_a_new_analysis_first_forgets_the_previous_one(handlers):
    state, label, class_cam, overlay, mask, report, seg_cam, notes = handlers.forget()
    assert state is None and label is None and report is None and notes == ""
    assert all(isinstance(u, dict) and u.get("__type__") == "update" for u in handlers.render(state, "normal", 0.5, 0.5))


def test_classify_runs_the_classifier_forward_pass_only(handlers, analyzer, examples, monkeypatch):
    path = examples[2][0]
    expected = handlers.analyze(str(path))[0]
    calls = []
    for explainer, attribute in ((analyzer.classifier_cam, "_run"), (analyzer.segmenter_cam, "_run"),
                                 (analyzer.segmenter_cam, "_logits")):
        monkeypatch.setattr(explainer, attribute, lambda *args: calls.append(args))
    probabilities = handlers.classify(str(path))
    assert calls == [], "no gradient maps and no segmenter for /classify"
    assert probabilities.keys() == expected.keys()
    assert all(abs(probabilities[c] - expected[c]) < 1e-5 for c in expected)


def test_sliders_before_any_analysis_change_nothing(handlers):
    assert all(isinstance(update, dict) and update.get("__type__") == "update" for update in handlers.render(None, "normal", 0.5, 0.5))


def test_rerender_uses_the_stored_analysis(handlers, examples, tmp_path):
    state, *_ = handlers.analyze_and_store(upload_copy(examples[4][0], tmp_path))
    label, class_cam, overlay, mask, report, seg_cam, notes = handlers.render(state, "normal", 0.2, 0.8)
    assert report["threshold"] == 0.2 and pixels(class_cam).shape[:2] == pixels(mask).shape
    _, _, _, strict_mask, _, _, _ = handlers.render(state, "benign", 0.9, 0.8)
    assert (pixels(strict_mask) > 0).sum() <= (pixels(mask) > 0).sum()


@pytest.mark.parametrize("content, message", [
    (b"hello", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image|damaged"),
])
def test_bad_input_is_a_readable_error(handlers, tmp_path, content, message):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(gr.Error, match=message):
        handlers.classify(str(bad))
    with pytest.raises(gr.Error, match="Upload or paste"):
        handlers.classify(None)


def test_tiny_image_is_refused(handlers, tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.new("L", (1, 1)).save(tiny)
    with pytest.raises(gr.Error, match="at least 32 px"):
        handlers.segment(str(tiny))


# --- live server ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    with AppServer() as running:
        yield running


def test_named_endpoints_through_gradio_client(server, examples, tmp_path):
    from gradio_client import handle_file

    client = server.client()
    assert {"/analyze", "/classify", "/segment"} <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    path = next(p for p, t in examples if t == "benign")
    label, class_cam, overlay, mask, report, seg_cam, notes = client.predict(handle_file(str(path)), api_name="/analyze")
    assert report["predicted_class"] == label["label"]
    assert abs(sum(c["confidence"] for c in label["confidences"]) - 1) < 1e-4
    assert Image.open(mask).format == "PNG" and Image.open(mask).size == Image.open(path).size
    assert Image.open(class_cam).size == Image.open(path).size

    classified = client.predict(handle_file(str(path)), api_name="/classify")
    assert classified["label"] == label["label"]
    mask_path, seg_report = client.predict(handle_file(str(path)), 0.5, api_name="/segment")
    assert seg_report["threshold"] == 0.5 and Image.open(mask_path).format == "PNG"

    bad = tmp_path / "not-a-scan.png"
    bad.write_bytes(b"definitely not an image")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(bad)), api_name="/analyze")
    again = client.predict(handle_file(str(path)), api_name="/classify")
    assert again["label"] == label["label"], "the server keeps serving after a bad file"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install chromium)")
def test_browser_clicks_an_example_and_sees_results(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(server.url, wait_until="domcontentloaded")
        page.locator("#examples").get_by_text("malignant · BUSI", exact=True).click()
        probabilities = page.locator("#probabilities")
        expect(probabilities).to_contain_text("malignant", timeout=60_000)
        expect(page.locator("#class-cam img")).to_have_count(1, timeout=30_000)
        page.get_by_role("tab", name="Segment").click()
        expect(page.locator("#seg-overlay img")).to_have_count(1, timeout=30_000)
        page.get_by_role("tab", name="Classify").click()
        shot = tmp_path / "app.png"
        page.screenshot(path=str(shot), full_page=True)

        # Upload a scan (it is analysed at once), then click Analyse: the same file analysed again.
        page.locator("#scan input[type=file]").set_input_files(str(EXAMPLE_UPLOAD))
        expect(probabilities).to_contain_text("benign", timeout=60_000)
        page.get_by_role("button", name="Analyse").click()
        page.wait_for_timeout(3_000)
        expect(probabilities).to_contain_text("benign", timeout=60_000)
        expect(page.get_by_text("Error", exact=True)).to_have_count(0)

        # A file that is not an image: a readable message, no stack trace, the previous results gone,
        # and the page keeps working.
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"this is a text file, not a scan")
        page.locator("#scan input[type=file]").set_input_files(str(bad))
        expect(page.get_by_text("not an image Pillow can read").first).to_be_visible(timeout=30_000)
        expect(probabilities).not_to_contain_text("benign", timeout=10_000)
        assert "Traceback" not in page.content()
        page.screenshot(path=str(tmp_path / "error.png"), full_page=True)

        # A phone: every tab in view (none behind a "more" menu), example captions whole.
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(server.url, wait_until="domcontentloaded")
        expect(phone.get_by_role("tab")).to_have_count(3, timeout=30_000)
        for name in ("Classify", "Segment", "About"):
            expect(phone.get_by_role("tab", name=name)).to_be_visible()
        expect(phone.get_by_label("More tabs")).to_be_hidden()
        captions = phone.locator("#examples .caption-label")
        expect(captions.first).to_be_visible(timeout=30_000)
        assert captions.evaluate_all("cs => cs.every(c => c.scrollWidth <= c.clientWidth + 1)"), "a caption is cut"
        phone.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("SAVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["SAVE_SCREENSHOT"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_temp_folder_goes_when_the_server_is_stopped(tmp_path, signum):
    """The app's own temporary folder (uploads, rendered results) is removed on kill and Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    port = free_port()
    env.update(TMPDIR=str(tmp_path), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    process = subprocess.Popen([sys.executable, "app.py"], cwd=Path(app.__file__).parent, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and process.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        assert list(tmp_path.glob("busi-demo-*")), "the app made its temporary folder"
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert not list(tmp_path.glob("busi-demo-*")), "the temporary folder outlived the server"


@pytest.mark.parametrize("threshold, opacity", [(float("nan"), 0.5), (0.5, float("nan")), ("high", 0.5), (1.5, 0.5),
                                                (0.5, -0.1)])
def test_bad_numbers_are_readable_errors(handlers, examples, threshold, opacity):
    with pytest.raises(gr.Error, match="must be a number from 0.0 to 1.0"):
        handlers.analyze(str(examples[0][0]), "predicted class", threshold, opacity)
    if threshold != 0.5:
        with pytest.raises(gr.Error, match="threshold must be a number"):
            handlers.segment(str(examples[0][0]), threshold)


def test_reports_round_probabilities(handlers, examples):
    *_, report, _, _ = handlers.analyze(str(examples[0][0]))
    assert all(len(repr(p).split(".")[-1]) <= 4 for p in report["probabilities"].values())


def test_mcp_tools_answer_with_content_and_readable_errors(tmp_path):
    """Through a real MCP client: the tools describe themselves, /analyze returns its results (a
    gr.State among the outputs used to empty them), and a bad scan says what was wrong."""
    import asyncio
    import base64

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    scan = base64.b64encode((Path(app.EXAMPLES_DIR) / "busi_malignant_49.png").read_bytes()).decode()
    not_a_scan = base64.b64encode(b"definitely not an image").decode()

    async def session_calls(url):
        async with streamablehttp_client(url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {tool.name: tool for tool in (await session.list_tools()).tools}
                good = await session.call_tool("analyze", {"path": "data:image/png;base64," + scan})
                bad = await session.call_tool("classify", {"path": "data:image/png;base64," + not_a_scan})
                return tools, good, bad

    with AppServer(extra_env={"GRADIO_MCP_SERVER": "True"}) as server:
        tools, good, bad = asyncio.run(session_calls(server.url))
    assert {"analyze", "classify", "segment"} <= set(tools)
    assert all("not a medical device" in tools[name].description for name in ("analyze", "classify", "segment"))
    assert "0 to 1" in str(tools["segment"].inputSchema["properties"]["threshold"])
    assert not good.isError and "malignant" in good.content[0].text and "confidence" in good.content[0].text
    assert bad.isError and "not an image" in " ".join(c.text for c in bad.content)
