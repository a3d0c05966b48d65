"""Training on faces spoilt as photographs (--photo) and on added data sets (--add)."""
import json

import numpy as np
import pytest

from tests.conftest import run, write_image


def test_photo_degrade_spoils_the_share_asked_and_nothing_else():
    pytest.importorskip("keras", reason="training augmentation needs Keras (the train extra)")
    from fercli.augment import photo_degrade

    rng = np.random.default_rng(0)
    faces = np.stack([np.tile(np.linspace(30, 220, 48).astype(np.uint8), (48, 1)) for _ in range(200)])
    faces[:, 20:28, 10:38] = 250   # an edge for blur and JPEG to soften
    untouched = photo_degrade(faces, np.random.default_rng(1), share=0.0)
    assert np.array_equal(untouched, faces) and untouched is not faces
    spoilt = photo_degrade(faces, np.random.default_rng(1), share=1.0)
    assert spoilt.dtype == np.uint8 and spoilt.shape == faces.shape
    changed = np.array([not np.array_equal(a, b) for a, b in zip(spoilt, faces)])
    assert changed.mean() > 0.7   # each way is drawn at random: a few faces draw none
    half = photo_degrade(faces, rng, share=0.5)
    assert 0.2 < np.mean([not np.array_equal(a, b) for a, b in zip(half, faces)]) < 0.6
    again = photo_degrade(faces, np.random.default_rng(1), share=1.0)
    assert np.array_equal(again, spoilt)   # the generator alone decides


def _folders(root, classes, per_class, seed):
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        for i in range(per_class):
            image = np.clip(rng.normal(60 + 60 * k, 25, (16, 16)), 0, 255).astype(np.uint8)
            write_image(root / name / f"{name}_{i}.png", image)
    return root


def test_train_with_photo_spoiling_and_added_data(tmp_path):
    pytest.importorskip("tensorflow", reason="training needs TensorFlow (the train extra)")
    data = tmp_path / "data"
    _folders(data / "train", ["happy", "sad"], 20, 0)
    _folders(data / "val", ["happy", "sad"], 8, 1)
    extra = _folders(tmp_path / "extra", ["happy", "sad", "contempt"], 6, 2)
    out = tmp_path / "m.keras"
    result = run("train", data, "--arch", "vgg-small", "--img-size", 16, "--epochs", 1, "--batch-size", 16,
                 "--photo", 0.5, "--add", extra, "--out", out)
    assert result.exit_code == 0, result.output + result.stderr
    assert "12 from" in result.output and "without contempt" in result.output   # happy + sad added, contempt left out
    assert "training on 52 images" in result.output
    import zipfile

    metadata = json.loads(zipfile.ZipFile(out).read("fercli.json"))
    assert metadata["config"]["photo"] == 0.5 and metadata["train_images"] == 52
    assert metadata["calibration"]["n"] == 16   # fitted on the validation split
    nothing = _folders(tmp_path / "nothing", ["contempt"], 3, 3)
    refused = run("train", data, "--arch", "vgg-small", "--img-size", 16, "--epochs", 1, "--add", nothing,
                  "--out", tmp_path / "x.keras")
    assert refused.exit_code == 2 and "no class" in refused.stderr
