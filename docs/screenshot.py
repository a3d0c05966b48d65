"""Re-make docs/example.png (the README's first example: two drawn faces, no
data set image) and docs/serve.png: start `fercli serve`, upload the example in
headless Chromium (Debian's chromium + playwright), screenshot the page.

    python docs/screenshot.py
"""
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

DOCS = Path(__file__).resolve().parent


def drawn_face(size: int, smile: bool) -> np.ndarray:
    """A simple drawn face (no data set image) that the Haar cascade finds."""
    img = np.full((size, size), 200, np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, c + 5), (int(size * 0.36), int(size * 0.46)), 0, 0, 360, 175, -1)
    for dx in (-1, 1):
        ex = c + dx * int(size * 0.16)
        cv2.ellipse(img, (ex, int(size * 0.40)), (int(size * 0.09), int(size * 0.045)), 0, 0, 360, 60, -1)
        cv2.line(img, (ex - int(size * 0.1), int(size * 0.31)), (ex + int(size * 0.1), int(size * 0.31)), 80, 6)
    cv2.line(img, (c, int(size * 0.45)), (c - 8, int(size * 0.62)), 140, 4)
    if smile:
        cv2.ellipse(img, (c, int(size * 0.70)), (int(size * 0.16), int(size * 0.07)), 0, 0, 180, 60, 8)
    else:
        cv2.line(img, (c - int(size * 0.13), int(size * 0.73)), (c + int(size * 0.13), int(size * 0.73)), 60, 8)
    return cv2.cvtColor(cv2.GaussianBlur(img, (0, 0), 2.5), cv2.COLOR_GRAY2BGR)


def example_image() -> np.ndarray:
    """docs/example.png: two drawn faces, smiling and straight-mouthed."""
    canvas = np.full((480, 800, 3), 235, np.uint8)
    canvas[130:350, 100:320] = drawn_face(220, smile=True)
    canvas[130:350, 480:700] = drawn_face(220, smile=False)
    return canvas


def main():
    from playwright.sync_api import sync_playwright

    cv2.imwrite(str(DOCS / "example.png"), example_image())
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "two drawn faces.png"
        cv2.imwrite(str(image), example_image())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "fercli", "serve", "--port", str(port)],
                                  cwd=DOCS.parent)
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.3)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync"])
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/")
                page.check("#explain")
                page.set_input_files("#file", str(image))
                page.wait_for_selector("div.cams img", timeout=60000)
                page.screenshot(path=str(DOCS / "serve.png"), full_page=True)
                browser.close()
        finally:
            server.terminate()


if __name__ == "__main__":
    main()
