"""`fercli serve`: a small local web page and a JSON API over the same pipeline.

    POST /api/predict   multipart form, image in the field `file`
                        ?annotate=1 adds the annotated image, ?explain=1 heat maps
    GET  /              the page
    GET  /api/health    model name and classes

Uploads are decoded in memory; nothing from a request touches the file system.
"""
from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from fercli.errors import UserError

PAGE = Path(__file__).resolve().parent / "web" / "index.html"


def _data_url(image: np.ndarray, ext: str = ".jpg") -> str:
    ok, encoded = cv2.imencode(ext, image, [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else [])
    kind = "jpeg" if ext == ".jpg" else "png"
    return f"data:image/{kind};base64," + base64.b64encode(encoded.tobytes()).decode()


def require_flask() -> None:
    try:
        import flask  # noqa: F401
    except ImportError:
        raise UserError("fercli serve needs Flask: pip install \"fercli[serve]\" (or pip install \".[serve]\" in a checkout).") from None


def create_app(analyzer, max_upload_mb: float = 20.0):
    require_flask()
    from flask import Flask, jsonify, request
    from werkzeug.exceptions import HTTPException

    from fercli.annotate import draw_faces
    from fercli.data import decode_image
    from fercli.explain import Explainer, explain_faces
    from fercli.sinks import columns_for, records_for

    app = Flask("fercli")
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    explainer = {}
    columns = columns_for(analyzer.classes)

    def flag(name: str) -> bool:
        return request.args.get(name, "0").lower() in ("1", "true", "yes", "on")

    def threshold(name: str, default: float) -> float:
        """?min_confidence= / ?min_quality= for this request, else the server's setting."""
        text = request.args.get(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name} must be a number between 0 and 1 (got {text!r}).")
        return value

    @app.get("/")
    def page():
        return PAGE.read_text(encoding="utf-8"), 200, {"Content-Type": "text/html; charset=utf-8"}

    @app.get("/api/health")
    def health():
        return jsonify(model=analyzer.model.name, classes=analyzer.classes)

    @app.post("/api/predict")
    def predict():
        upload = request.files.get("file")
        if upload is None:
            return jsonify(error="no file: send the image as multipart form field 'file'"), 400
        name = Path(upload.filename or "upload").name
        raw = np.frombuffer(upload.read(), dtype=np.uint8)
        try:
            image = decode_image(raw)
        except ValueError as exc:
            return jsonify(error=f"{name}: {exc}"), 400
        thresholds = {"min_confidence": threshold("min_confidence", analyzer.min_confidence),
                      "min_quality": threshold("min_quality", analyzer.min_quality)}
        with analyzer.lock:  # the detector and the explainer are shared by all requests
            faces = replace(analyzer.analyze(image), **thresholds)
            body = {"source": name, "width": int(image.shape[1]), "height": int(image.shape[0]),
                    "classes": analyzer.classes, "model": analyzer.model.name,
                    "records": [{c: r.get(c) for c in columns} for r in records_for(name, faces, analyzer.classes)]}
            if flag("annotate"):
                body["annotated"] = _data_url(draw_faces(image, faces))
            if flag("explain") and faces:
                if "x" not in explainer:
                    explainer["x"] = Explainer(analyzer.model)
                body["explanations"] = [_data_url(o, ".png") for o in explain_faces(analyzer, explainer["x"], image, faces)]
        return jsonify(body)

    @app.errorhandler(413)
    def too_large(_):
        return jsonify(error=f"upload too large: the limit is {max_upload_mb:g} MB"), 413

    @app.errorhandler(HTTPException)
    def http_error(exc):
        return jsonify(error=exc.description), exc.code

    @app.errorhandler(UserError)
    def user_error(exc):
        return jsonify(error=str(exc)), 400

    return app


def serve(analyzer, host: str, port: int, max_upload_mb: float) -> None:
    app = create_app(analyzer, max_upload_mb)
    from werkzeug.serving import make_server

    import socket

    try:  # werkzeug would print its own lines about a busy port and exit 1
        with socket.create_server((host, port), reuse_port=False):
            pass
        server = make_server(host, port, app, threaded=True)
    except (OSError, SystemExit) as exc:
        reason = getattr(exc, "strerror", None) or "the address is in use or not available"
        raise UserError(f"cannot listen on {host}:{port} ({reason}); choose another --port or --host.") from None
    print(f"fercli serve: http://{host}:{port}/  (model {analyzer.model.name}; Ctrl-C stops)", flush=True)
    server.serve_forever()
