import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest

from tests.conftest import REPO, run, scene_with_faces, write_image

flask = pytest.importorskip("flask", reason="the serve extra (Flask) is not installed")


@pytest.fixture(scope="module")
def analyzer():
    from fercli.pipeline import Analyzer
    return Analyzer()


@pytest.fixture(scope="module")
def client(analyzer):
    from fercli.serve import create_app
    return create_app(analyzer, max_upload_mb=2).test_client()


def jpeg_bytes(image) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def post(client, data: bytes, name="photo.jpg", query=""):
    return client.post("/api/predict" + query, data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def test_page_and_health(client, analyzer):
    page = client.get("/")
    assert page.status_code == 200 and b"/api/predict" in page.data and b"<input" in page.data
    health = client.get("/api/health").get_json()
    assert health["classes"] == analyzer.classes


def test_predict_returns_the_same_records_as_the_cli(client, tmp_path):
    scene, truth = scene_with_faces(2)
    write_image(tmp_path / "photo.jpg", scene)
    response = post(client, (tmp_path / "photo.jpg").read_bytes(), query="?annotate=1&explain=1")
    assert response.status_code == 200
    body = response.get_json()
    assert run("predict", "-p", tmp_path / "photo.jpg", "-o", tmp_path / "out", "--jsonl").exit_code == 0
    cli_records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    api_records = body["records"]
    assert len(api_records) == len(truth) == len(cli_records)
    for api, cli in zip(api_records, cli_records):
        assert api == dict(cli, source="photo.jpg")
    assert body["annotated"].startswith("data:image/jpeg;base64,") and len(body["explanations"]) == 2


def test_no_face_and_errors(client):
    blank = post(client, jpeg_bytes(np.full((100, 100, 3), 128, np.uint8))).get_json()
    assert blank["records"][0]["status"] == "no_face"
    text = post(client, b"just some text", name="notes.txt")
    assert text.status_code == 400 and "not a readable image" in text.get_json()["error"]
    empty = post(client, b"", name="empty.jpg")
    assert empty.status_code == 400 and "0 bytes" in empty.get_json()["error"]
    missing = client.post("/api/predict", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and "field 'file'" in missing.get_json()["error"]
    too_big = post(client, b"\0" * (3 * 1024 * 1024), name="big.jpg")
    assert too_big.status_code == 413 and "2 MB" in too_big.get_json()["error"]
    assert client.get("/nope").status_code == 404
    assert client.get("/api/predict").status_code == 405


def test_concurrent_requests(client, analyzer):
    from fercli.serve import create_app

    scene, truth = scene_with_faces(2)
    data = jpeg_bytes(scene)
    results, errors = [], []
    # One app, as `fercli serve` runs, and a client per thread. (Building Flask apps in several threads
    # at once can trip CPython 3.11's AST recursion check inside werkzeug's route compiler.)
    app = create_app(analyzer)

    def worker():
        try:
            local = app.test_client()
            response = post(local, data)
            results.append(response.get_json()["records"])
        except Exception as exc:  # noqa: BLE001 (shown by the assertion below)
            errors.append(f"{type(exc).__name__}: {exc}; response {getattr(locals().get('response'), 'status_code', None)} "
                          f"{getattr(locals().get('response'), 'data', b'')[:300]!r}")

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 6 and all(r == results[0] for r in results) and len(results[0]) == len(truth)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "fercli", "serve", "--port", str(port), "--max-upload-mb", "20"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/api/health", timeout=1)
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(process.stderr.read())
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_real_server_limits_upload_size(live_server):
    """A 30 MB upload announced in its header is refused with 413 before the server reads it."""
    import http.client
    from urllib.parse import urlparse

    where = urlparse(live_server)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    head = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n\r\n"
    connection.putrequest("POST", "/api/predict")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(len(head) + 30 * 1024 * 1024 + 8))
    connection.endheaders()
    connection.send(head + b"\0" * 65536)  # a start of the body only: the answer must not wait for the rest
    response = connection.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["error"]
    connection.close()


def chromium_path():
    import shutil
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not chromium_path(), reason="no chromium on this machine (Debian package chromium)")
def test_page_in_a_real_browser(live_server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    scene, truth = scene_with_faces(1)
    write_image(tmp_path / "face.jpg", scene)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.goto(live_server + "/")
        page.set_input_files("#file", str(tmp_path / "face.jpg"))
        page.wait_for_selector("td.emotion", timeout=60000)
        emotion = page.inner_text("td.emotion")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    from fercli.pipeline import Analyzer
    assert emotion == Analyzer().analyze(scene)[0].emotion
