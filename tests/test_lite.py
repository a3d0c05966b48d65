"""The lean runtime: .lite models on ONNX Runtime, and predict, video, serve and eval
in a process where TensorFlow and Keras cannot be imported."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.clips import phone_clip
from tests.conftest import FIXTURE_FACE, REPO, run, synthetic_faces, write_image

HIDE = ("tensorflow", "keras", "jax")


def without_tensorflow(tmp_path: Path, *args, cwd=REPO, hide=HIDE) -> subprocess.CompletedProcess:
    """`fercli ARGS` in a process where importing TensorFlow, Keras or JAX fails,
    as after `pip install fercli` without the train extra (`hide`: the top-level
    packages that fail, e.g. HIDE + ("matplotlib",) without the plots extra too)."""
    hidden = tmp_path / "hidden"
    hidden.mkdir(exist_ok=True)
    # a meta path finder that refuses them, to import and to importlib.util.find_spec alike
    (hidden / "sitecustomize.py").write_text(
        "import sys\nclass Refuse:\n    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {sorted(hide)!r}:\n            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Refuse())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hidden), str(REPO)]))
    return subprocess.run([sys.executable, "-m", "fercli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def face_clip(path: Path) -> Path:
    """12 frames of one face, phone-style (H.264 + AAC)."""
    face = __import__("cv2").imread(str(FIXTURE_FACE))
    canvas = np.full((240, 320, 3), 90, np.uint8)
    canvas[40:200, 80:240] = __import__("cv2").resize(face, (160, 160))
    phone_clip(path, frames=12, picture=lambda i: canvas)
    return path


def labelled_crops(folder: Path) -> Path:
    """12 synthetic face crops in happy/ and sad/."""
    for i, crop in enumerate(synthetic_faces(12, seed=3)):
        write_image(folder / ("happy" if i % 2 else "sad") / f"{i}.png", crop)
    return folder


def test_predict_video_and_eval_run_without_tensorflow(tmp_path):
    done = without_tensorflow(tmp_path, "predict", "-p", REPO / "docs" / "example.jpg", "-o", tmp_path / "p")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "p" / "predictions.csv", newline="") as handle:
        assert [row["emotion"] for row in csv.DictReader(handle)] == ["happy"]

    done = without_tensorflow(tmp_path, "video", face_clip(tmp_path / "clip.mp4"), "-o", tmp_path / "v", "-q")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "v" / "clip.mp4").is_file() and (tmp_path / "v" / "clip.timeline.png").is_file()

    done = without_tensorflow(tmp_path, "eval", labelled_crops(tmp_path / "crops"), "-o", tmp_path / "e", "--json", tmp_path / "e.json")
    assert done.returncode == 0, done.stderr
    assert '"n": 12' in (tmp_path / "e.json").read_text()


def test_video_and_eval_without_matplotlib_write_the_csv_data_and_say_so(tmp_path):
    """The plain install has no matplotlib (the plots extra): each chart's CSV, no PNG, one note."""
    note = 'note: charts need matplotlib (pip install "fercli[plots]"); wrote the CSV data only.'
    done = without_tensorflow(tmp_path, "video", face_clip(tmp_path / "clip.mp4"), "-o", tmp_path / "v", "-q",
                              hide=HIDE + ("matplotlib",))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "v" / "clip.mp4").is_file() and (tmp_path / "v" / "clip.timeline.csv").stat().st_size > 0
    assert not list((tmp_path / "v").glob("*.png"))
    assert done.stderr.count(note) == 1 and "timeline.png" not in done.stderr, done.stderr

    done = without_tensorflow(tmp_path, "eval", labelled_crops(tmp_path / "crops"), "-o", tmp_path / "e",
                              hide=HIDE + ("matplotlib",))
    assert done.returncode == 0, done.stderr
    assert {p.name for p in (tmp_path / "e").iterdir()} == {"eval_default.confusion.csv", "eval_default.reliability.csv"}
    assert done.stderr.count(note) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "wrote " in done.stdout and ".png" not in done.stdout


def test_serve_answers_without_tensorflow(tmp_path):
    pytest.importorskip("flask", reason="serve needs flask (the serve extra)")
    code = ("import json, sys\nfrom fercli.pipeline import Analyzer\nfrom fercli.serve import create_app\n"
            "app = create_app(Analyzer(), 5)\nclient = app.test_client()\n"
            f"reply = client.post('/api/predict', data={{'file': (open({str(FIXTURE_FACE)!r}, 'rb'), 'f.jpg')}})\n"
            "print(reply.status_code, json.dumps(reply.get_json()['records'][0]['emotion']))\n"
            "explained = client.post('/api/predict?explain=1', data={'file': (open(%r, 'rb'), 'f.jpg')})\n"
            "print(explained.status_code, explained.get_json().get('error', ''))\n" % str(FIXTURE_FACE))
    script = tmp_path / "serve_check.py"
    script.write_text(code)
    hide = tmp_path / "x"
    hide.mkdir()
    without_tensorflow(hide, "--version")   # writes the hiding modules under hide/hidden
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hide / "hidden"), str(REPO)]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == '200 "happy"'
    assert second.startswith("400 ") and 'pip install "fercli[train]"' in second


@pytest.mark.parametrize("args, says", [
    (["train", "DATA"], 'fercli train needs TensorFlow'),
    (["explain", "-p", REPO / "docs" / "example.jpg"], "explaining a prediction (Grad-CAM) needs TensorFlow"),
    (["export", "default"], "fercli export needs TensorFlow"),
    (["ensemble", "default", "fast", "--out", "x.keras"], "fercli ensemble needs TensorFlow"),
    (["predict", "-p", REPO / "docs" / "example.jpg", "--model", "KERAS"], "export"),
])
def test_training_commands_without_tensorflow_say_what_to_install(tmp_path, args, says):
    import zipfile

    from fercli.modelfile import METADATA_MEMBER, resolve_model_path

    keras_file = tmp_path / "mine.keras"   # its metadata is all that is read before the sentence
    with zipfile.ZipFile(resolve_model_path("fast")) as shipped, zipfile.ZipFile(keras_file, "w") as target:
        target.writestr(METADATA_MEMBER, shipped.read(METADATA_MEMBER))
    done = without_tensorflow(tmp_path, *[{"DATA": tmp_path, "KERAS": keras_file}.get(a, a) for a in args], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert 'pip install "fercli[train]"' in done.stderr


def test_lite_model_matches_keras_and_chooses_its_precision(monkeypatch):
    """float32 gives the Keras model's probabilities; int8 (the default) stays
    close and agrees on the class; the batch a crop shares changes nothing."""
    pytest.importorskip("tensorflow", reason="the Keras side of the comparison needs TensorFlow (the train extra)")
    from fercli.errors import UserError
    from fercli.inference import EmotionModel
    from fercli.lite import LiteModel
    from fercli.modelfile import resolve_model_path

    crops = synthetic_faces(40, seed=5)
    crops[:20] = np.clip(crops[:20] // 2 + 60, 0, 255)
    reference = EmotionModel("default", "float32").predict(crops)   # Keras, rebuilt from the .lite file's weights
    monkeypatch.delenv("FERCLI_PRECISION", raising=False)
    default = LiteModel(resolve_model_path("default"))
    assert default.precision == "int8"
    exact = LiteModel(resolve_model_path("default"), "float32")
    assert np.abs(exact.predict(crops) - reference).max() < 1e-4
    quantized = default.predict(crops)
    assert np.abs(quantized - reference).max() < 0.06
    assert (quantized.argmax(1) == reference.argmax(1)).mean() >= 0.9
    one_by_one = np.concatenate([default.predict(crops[i:i + 1]) for i in range(len(crops))])
    assert np.abs(one_by_one - quantized).max() < 1e-5
    monkeypatch.setenv("FERCLI_PRECISION", "float32")
    assert LiteModel(resolve_model_path("default")).precision == "float32"
    monkeypatch.setenv("FERCLI_PRECISION", "float64")
    with pytest.raises(UserError, match="float64"):
        LiteModel(resolve_model_path("default"))


def test_export_makes_a_lite_file_from_a_trained_model(tmp_path):
    """`fercli export` on a .keras file fercli wrote: a .lite file with both
    networks and the metadata, predicting as the Keras model does; --val records both accuracies."""
    pytest.importorskip("tensorflow", reason="export needs TensorFlow (the train extra)")
    from fercli.architectures import build_model
    from fercli.inference import EmotionModel
    from fercli.lite import LiteModel
    from fercli.modelfile import read_metadata, save_model

    model = build_model("vgg-small", 2, 16)
    save_model(model, tmp_path / "mine.keras", {"classes": ["happy", "sad"], "input_size": 16, "arch": "vgg-small"},
               weights_dtype="float16")
    for i in range(6):
        write_image(tmp_path / "val" / ("happy" if i % 2 else "sad") / f"{i}.png", synthetic_faces(1, 16, seed=i)[0])
    result = run("export", tmp_path / "mine.keras", "--val", tmp_path / "val")
    assert result.exit_code == 0, result.output + result.stderr
    lite = tmp_path / "mine.lite"
    metadata = read_metadata(lite)
    assert metadata["precisions"] == ["int8", "float32"] and metadata["classes"] == ["happy", "sad"]
    assert set(metadata["measured"]) == {"int8", "float32"} and metadata["lite"]["from"] == "mine.keras"
    crops = synthetic_faces(8, 16, seed=9)
    assert np.abs(LiteModel(lite, "float32").predict(crops) - EmotionModel(tmp_path / "mine.keras", "float32").predict(crops)).max() < 1e-4
    done = run("predict", "-p", FIXTURE_FACE, "--model", lite, "-o", tmp_path / "out", "--no-images")
    assert done.exit_code == 0, done.stderr
    assert run("export", tmp_path / "mine.keras", "--out", tmp_path / "x.tflite").exit_code == 2

    # The .lite file is the model's one copy: its initializers are the Keras weights, stored as float16 as the
    # .keras file stores them, and the Keras model rebuilt from it has exactly those weights.
    import zipfile

    import onnx

    from fercli.modelfile import load_keras_model

    with zipfile.ZipFile(lite) as archive:
        stored = onnx.load_from_string(archive.read("float32.onnx")).graph.initializer
        convolutions, on_the_way = steps_before_image_convolutions(onnx.load_from_string(archive.read("int8.onnx")).graph)
    assert convolutions == 1 and not on_the_way & {"QuantizeLinear", "DequantizeLinear"}, on_the_way
    assert {t.data_type for t in stored if len(t.dims) == 4} == {onnx.TensorProto.FLOAT16}
    original, rebuilt = load_keras_model(tmp_path / "mine.keras"), load_keras_model(lite)
    pairs = [(a, b) for a, b in zip(original.variables, rebuilt.variables, strict=True) if "seed_generator" not in a.path]
    assert pairs and all(a.path == b.path and np.array_equal(a.numpy(), b.numpy()) for a, b in pairs)
    # ... from which export makes a .lite file again, never over its input
    assert run("export", lite).exit_code == 2
    again = run("export", lite, "--out", tmp_path / "again.lite", "--no-int8")
    assert again.exit_code == 0, again.stderr
    assert read_metadata(tmp_path / "again.lite")["precisions"] == ["float32"]
    assert np.abs(LiteModel(tmp_path / "again.lite").predict(crops) - LiteModel(lite, "float32").predict(crops)).max() < 1e-6


def test_detector_int8_weights_keep_to_seven_bits():
    """On CPUs without VNNI (AVX2) ONNX Runtime sums pairs of uint8 x int8
    products in 16 bits with saturation: 8-bit weights (up to 127) overflow it
    and the detector then finds other faces there; 7-bit ones (-64..64:
    2 x 255 x 64 = 32,640) cannot (cascades/README.md)."""
    onnx = pytest.importorskip("onnx", reason="reading the network's weights needs onnx (the train extra)")
    from onnx import numpy_helper

    from fercli.detect import CENTERFACE_FILE
    from fercli.resources import resource_dir

    graph = onnx.load(str(resource_dir("cascades") / CENTERFACE_FILE)).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    low, high = min(int(w.min()) for w in weights), max(int(w.max()) for w in weights)
    assert len(weights) > 40 and -64 <= low and high <= 64 and high - low > 64, (len(weights), low, high)
    # the output convolutions (box sizes, offsets, landmarks) read float32 weights
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert sum(node.op_type == "Conv" and node.input[1] in floats for node in graph.node) == 3
    # the picture goes in as fercli holds it: uint8 (B, H, W, 3)
    picture = graph.input[0].type.tensor_type
    assert picture.elem_type == onnx.TensorProto.UINT8 and picture.shape.dim[3].dim_value == 3


def steps_before_image_convolutions(graph) -> tuple[int, set[str]]:
    """(how many convolutions read the image through no other convolution, the operators on the way there
    that compute on it), walking back from each convolution's input."""
    producers = {name: node for node in graph.node for name in node.output}
    constants = {t.name for t in graph.initializer}
    convolutions, on_the_way = 0, set()
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        pending, seen, operators, reaches_input = [conv.input[0]], set(), set(), False
        while pending:
            name = pending.pop()
            node = producers.get(name)
            if name == graph.input[0].name:
                reaches_input = True
            if node is None or name in seen:
                continue
            if node.op_type == "Conv":   # another convolution first: this one does not read the image
                reaches_input = False
                break
            seen.add(name)
            if not (node.op_type == "DequantizeLinear" and node.input[0] in constants):   # a constant's int8 copy
                operators.add(node.op_type)
            pending.extend(node.input)
        if reaches_input:
            convolutions += 1
            on_the_way |= operators
    return convolutions, on_the_way


@pytest.mark.parametrize("name", ["default", "fast"])
def test_int8_networks_do_not_quantize_the_image(name):
    """The steps between the input and the (float32) convolutions on the image (rescaling, an ensemble's mirrored
    and zoomed views) run in float: quantizing a one-channel picture there gains nothing and costs ONNX Runtime
    its slow element-wise int8 kernels (export.float_until_first_convolutions)."""
    onnx = pytest.importorskip("onnx", reason="reading the network needs onnx (the train extra)")
    import zipfile

    from fercli.modelfile import resolve_model_path

    with zipfile.ZipFile(resolve_model_path(name)) as archive:
        graph = onnx.load_from_string(archive.read("int8.onnx")).graph
    convolutions, on_the_way = steps_before_image_convolutions(graph)
    assert convolutions >= 1 and "Mul" in on_the_way, (convolutions, on_the_way)
    assert not on_the_way & {"QuantizeLinear", "DequantizeLinear"}, on_the_way
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 10   # the rest is int8


def test_damaged_lite_file_is_one_sentence(tmp_path):
    broken = tmp_path / "broken.lite"
    broken.write_bytes(b"PK\x03\x04 not a zip")
    done = run("predict", "-p", FIXTURE_FACE, "--model", broken, "-o", tmp_path / "out")
    assert done.exit_code == 2 and "not a valid fercli .lite model file" in done.stderr


def test_thread_count_follows_fercli_threads(monkeypatch):
    """A Ray actor sets FERCLI_THREADS to its CPUs; otherwise the CPUs this process may use."""
    from fercli.resources import cpu_threads

    monkeypatch.setenv("FERCLI_THREADS", "1")
    assert cpu_threads() == 1
    monkeypatch.setenv("FERCLI_THREADS", "many")
    assert cpu_threads() == len(os.sched_getaffinity(0))
    monkeypatch.delenv("FERCLI_THREADS")
    assert cpu_threads() == len(os.sched_getaffinity(0))
