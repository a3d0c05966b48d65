"""Re-make docs/serve.png: start `fercli serve`, upload docs/example.jpg (the
README's first example: a public-domain NASA portrait of the astronaut Eileen
Collins, from scikit-image's sample data) in headless Chromium (Debian's
chromium + playwright), screenshot the page, stored with a 256-colour palette
(a third of the size; a page of flat colours looks the same).

    python docs/screenshot.py
"""
import io
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def main():
    from playwright.sync_api import sync_playwright

    image = DOCS / "example.jpg"
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
            shot = page.screenshot(full_page=True)
            browser.close()
        from PIL import Image

        Image.open(io.BytesIO(shot)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
            .save(DOCS / "serve.png", optimize=True)
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
