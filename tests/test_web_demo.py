"""The web demo in a real browser: start ``scripts/web_demo.py`` with the tiny model on localhost, drive it with
headless Chromium (Playwright), upload an image, ask, and see the answer and both pictures appear.

Skipped, with the reason printed, only when Gradio, Playwright or a Chromium cannot be found (``.ci/run`` installs
all three: Gradio and Playwright from PyPI, Chromium from Debian's packages)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, TINY

# flags for a closed network (no background connections, no GPU, root without sandbox)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium() -> str | None:
    for name in (os.environ.get("READ_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def skip_unless_browser() -> str:
    missing = []
    for module in ("gradio", "playwright"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} (pip install -e '.[dev,demo]')")
    exe = chromium()
    if exe is None:
        missing.append("a Chromium executable (apt-get install chromium, or READ_CHROMIUM=/path)")
    if missing:
        reason = "web demo browser test skipped: missing " + ", ".join(missing)
        print(reason)
        pytest.skip(reason)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    exe = skip_unless_browser()
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "CUDA_VISIBLE_DEVICES": ""}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "web_demo.py"), "--model", str(TINY),
                             "--device", "cpu", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError("web demo exited: " + (tmp_path / "server.log").read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("web demo did not start: " + (tmp_path / "server.log").read_text()[-2000:])
        yield f"http://127.0.0.1:{port}/", exe
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_upload_ask_and_see_the_answer_and_pictures(server, tmp_path):
    import cv2
    from playwright.sync_api import sync_playwright

    url, exe = server
    image = tmp_path / "shapes.png"
    canvas = np.full((120, 160, 3), 128, np.uint8)
    cv2.circle(canvas, (50, 60), 30, (0, 0, 220), -1)
    cv2.rectangle(canvas, (100, 20), (150, 100), (0, 200, 0), -1)
    cv2.imwrite(str(image), canvas)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_selector("#read-image input[type=file]", state="attached", timeout=60_000)
            page.set_input_files("#read-image input[type=file]", str(image))
            page.wait_for_selector("#read-image img", timeout=30_000)
            page.fill("#read-question textarea", "Where is the red circle? Please output segmentation mask.")
            page.click("#read-ask")
            page.wait_for_function("document.querySelector('#read-answer textarea').value.length > 0",
                                   timeout=120_000)
            answer = page.input_value("#read-answer textarea")
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            # the tiny random model may or may not emit [SEG]; the page says which, and always shows the overlay
            assert "[SEG]" in answer
            overlay = page.wait_for_selector("#read-overlay img", timeout=60_000)
            box = overlay.bounding_box()
            assert box is not None and box["width"] > 50 and box["height"] > 50
            src = overlay.get_attribute("src")
            assert src and (src.startswith("data:image") or "/file=" in src or "gradio_api/file" in src)
        finally:
            browser.close()
