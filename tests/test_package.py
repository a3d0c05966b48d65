import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "fercli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    for command in ("train", "eval"):
        assert f"  {command} " in out.stdout
    assert "tensorflow" not in out.stderr.lower()


def test_help_does_not_import_tensorflow():
    code = "import sys; from fercli.cli import main; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_version():
    from fercli import __version__
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_installed_package_finds_model_and_cascades(tmp_path):
    """After `pip install .`, the shipped files are found from any directory."""
    code = ("import json, fercli.modelfile as m, fercli.resources as r; "
            "print(json.dumps([str(m.resolve_model_path(None)), str(r.resource_dir('cascades'))]))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    if "No module named 'fercli'" in out.stderr:
        pytest.skip("fercli is not installed in this environment (run `pip install .` first)")
    assert out.returncode == 0, out.stderr
    model, cascades = map(Path, json.loads(out.stdout))
    assert model.is_file() and model.name == "default.lite"
    from fercli.lite import carries_keras_model

    assert carries_keras_model(model)   # for train --init/--teacher, explain, ensemble, export
    assert (cascades / "haarcascade_frontalface_default.xml").is_file() and (cascades / "centerface.onnx").is_file()


def test_models_lists_the_shipped_models():
    from fercli.inference import load_model
    from fercli.modelfile import read_metadata, recorded_accuracy
    result = run("models")
    assert result.exit_code == 0, result.stderr
    model = load_model(None)
    accuracy, _ = recorded_accuracy(read_metadata(model.path), model.precision)
    assert "default" in result.output and f"{accuracy:.2%}" in result.output
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in result.output.splitlines() if line.startswith("│")}
    header = [c.strip() for c in next(l for l in result.output.splitlines() if "crops/s" in l).split("┃")[2:-1]]
    speeds = {name: float(cells[header.index("crops/s")].replace(",", "")) for name, cells in rows.items()}
    assert set(speeds) == {"default", "accurate", "fast"} and all(v > 0 for v in speeds.values())
    assert speeds["fast"] > speeds["accurate"]  # one network against four, each on four views
    assert "classes of default, accurate, fast: angry, disgust, fear, happy, neutral, sad, surprise" in result.output


def test_readme_example_finds_the_smiling_face(tmp_path):
    """docs/example.jpg: one smiling astronaut, her face at about x 175-275, y 54-180."""
    result = run("predict", "-p", REPO / "docs" / "example.jpg", "-o", tmp_path)
    assert result.exit_code == 0, result.stderr
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["status"], row["emotion"]) for row in rows] == [("ok", "happy")]
    assert 150 < int(rows[0]["x"]) < 200 and 30 < int(rows[0]["y"]) < 80
    assert (tmp_path / "example.jpg").is_file()
