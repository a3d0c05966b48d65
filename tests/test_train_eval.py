import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from fercli.evaluate import scores
from fercli.errors import UserError
from fercli.architectures import ARCHITECTURES, build_model
from fercli.inference import EmotionModel
from fercli.modelfile import read_metadata
from tests.conftest import (CKPLUS, FER2013, REPO, copy_sample, requires_ckplus, requires_fer2013, run, synthetic_faces,
                            write_image)


def test_scores_on_a_known_case():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0])
    result = scores(labels, predicted, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert result["per_class"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert result["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_every_architecture_maps_faces_to_class_probabilities():
    faces = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 1)).astype("float32")
    for arch in ARCHITECTURES:
        probabilities = build_model(arch, 7, 48).predict(faces, verbose=0)
        assert probabilities.shape == (3, 7), arch
        assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4), arch
    with pytest.raises(UserError, match="unknown architecture 'resnet'"):
        build_model("resnet", 7, 48)


@requires_fer2013
def test_train_one_epoch_end_to_end(tiny_model, fer_sample):
    meta = read_metadata(tiny_model)
    assert meta["classes"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert meta["input_size"] == 48 and meta["train_images"] == 280 and meta["val_images"] == 105
    assert 0.0 <= meta["val_accuracy"] <= 1.0 and meta["fercli_version"]
    stem = tiny_model.with_suffix("")
    history = open(f"{stem}.history.csv").read().splitlines()
    assert history[0].startswith("epoch,") and len(history) == 2
    assert os.path.getsize(f"{stem}.history.png") > 1000
    assert "optimizer" not in str(zipfile.ZipFile(tiny_model).namelist())


@requires_fer2013
def test_eval_json_matches_the_model(tiny_model, fer_sample, tmp_path, monkeypatch):
    # float32, as the Keras reference below computes: a barely trained model has many near ties, which
    # bfloat16 (the default on CPUs with native bfloat16) flips
    monkeypatch.setenv("FERCLI_PRECISION", "float32")
    result = run("eval", fer_sample / "val", "--model", tiny_model, "--json", tmp_path / "r.json", "-o", tmp_path)
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report) >= {"accuracy", "n", "classes", "per_class", "confusion", "model"}
    assert report["n"] == 105 and np.sum(report["confusion"]) == 105
    # The reported accuracy is what the saved network scores on these images, run by Keras itself
    # (not fercli's folded inference copy: a near tie may flip, so within 2 images).
    from fercli.data import read_class_folders
    from fercli.modelfile import load_keras_model
    data = read_class_folders(fer_sample / "val")
    raw = load_keras_model(tiny_model).predict(data.images[..., None].astype("float32"), verbose=0)
    # training fitted the file's calibration on its validation split; eval applies it
    from fercli.calibration import calibrate
    from fercli.modelfile import read_metadata as metadata_of
    predicted = calibrate(raw, metadata_of(tiny_model)["calibration"]).argmax(axis=1)
    assert report["accuracy"] == pytest.approx(float(np.mean(predicted == data.labels)), abs=2 / 105)
    assert "precision" in result.output and (tmp_path / "eval_tiny.confusion.png").stat().st_size > 1000
    assert (tmp_path / "eval_tiny.confusion.csv").read_text().startswith("true \\ predicted,angry")


@requires_fer2013
def test_eval_record_stores_the_accuracy_per_precision(tiny_model, fer_sample, tmp_path, monkeypatch):
    import shutil

    from fercli.modelfile import recorded_accuracy
    model = shutil.copy(tiny_model, tmp_path / "m.keras")
    measured = {}
    for precision in ("float32", "bfloat16"):
        monkeypatch.setenv("FERCLI_PRECISION", precision)
        result = run("eval", fer_sample / "val", "--model", model, "--json", tmp_path / "r.json", "-o", tmp_path, "--record")
        assert result.exit_code == 0, result.output + result.stderr
        measured[precision] = json.loads((tmp_path / "r.json").read_text())["accuracy"]
    meta = read_metadata(model)
    for precision, accuracy in measured.items():
        assert recorded_accuracy(meta, precision) == (accuracy, str(fer_sample / "val"))
    assert meta["val_accuracy"] == read_metadata(tiny_model)["val_accuracy"]  # training's figure stays


@requires_fer2013
def test_resume_after_kill(fer_sample, tmp_path):
    """A training killed after its first epoch continues from there with --resume."""
    out = tmp_path / "m.keras"
    args = [sys.executable, "-m", "fercli", "train", str(fer_sample / "train"), "--epochs", "3",
            "--batch-size", "32", "--val-split", "0.2", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = tmp_path / "m.keras.ckpt" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if state.exists() and json.loads(state.read_text() or "{}").get("epoch", 0) >= 1:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 3
    resumed = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and f"after epoch {done}" in resumed.stdout
    assert json.loads(state.read_text())["epoch"] == 3
    assert len(open(tmp_path / "m.history.csv").read().splitlines()) == 1 + 3


@requires_fer2013
def test_shipped_model_classifies_real_val_crops():
    from fercli.data import read_class_folders
    data = read_class_folders(FER2013 / "val")
    model = EmotionModel()  # the shipped default
    accuracy = float(np.mean(model.predict(data.images).argmax(axis=1) == data.remap(model.classes).labels))
    assert accuracy > 0.60, accuracy  # chance is 1/7, the majority class 25%


def test_inference_copy_folds_batch_norms_and_computes_the_same():
    """EmotionModel runs a copy with every batch norm folded into its convolution:
    fewer operations, the same probabilities, for a single network and for an
    ensemble (networks nested inside a model, each called on several views)."""
    import keras

    from fercli.architectures import build_average
    from fercli.inference import inference_copy

    rng = np.random.default_rng(0)
    networks = [build_model(arch, 7, 48) for arch in ("vgg-small", "vgg-small-flat")]
    for network in networks:  # batch norm statistics far from the identity
        for layer in network.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                n = layer.gamma.shape[0]
                layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.2, 3, n)])
    images = rng.integers(0, 256, (32, 48, 48, 1)).astype(np.float32)
    for model in [networks[0], build_average(networks, 48, "flip-zoom")]:
        folded = inference_copy(model)
        np.testing.assert_allclose(folded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)
        norms = [layer for layer in folded._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms == [] and folded.count_params() < model.count_params()


@requires_fer2013
def test_bfloat16_inference_agrees_with_float32():
    from fercli.data import read_class_folders
    images = read_class_folders(FER2013 / "val").images[:500]
    exact = EmotionModel(precision="float32").predict(images)
    fast = EmotionModel(precision="bfloat16").predict(images)
    assert np.abs(fast - exact).max() < 0.1
    assert np.mean(fast.argmax(axis=1) == exact.argmax(axis=1)) > 0.97


@requires_ckplus
def test_ckplus_model_with_its_own_classes(tmp_path):
    data = copy_sample(CKPLUS, tmp_path / "ck", 25)
    result = run("train", data, "--epochs", 1, "--batch-size", 32, "--val-split", 0.2, "--out", tmp_path / "ck.keras")
    assert result.exit_code == 0, result.output + result.stderr
    assert read_metadata(tmp_path / "ck.keras")["classes"] == ["angry", "contempt", "disgust", "fear", "happy", "sad", "surprise"]
    result = run("eval", data, "--model", tmp_path / "ck.keras", "--json", tmp_path / "r.json", "-o", tmp_path)
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 25 * 7 and "contempt" in report["per_class"]


@requires_ckplus
def test_kfold_cross_validation_reports_mean_and_std(tmp_path):
    data = copy_sample(CKPLUS, tmp_path / "ck", 12)
    result = run("train", data, "--folds", 3, "--epochs", 1, "--batch-size", 32, "--out", tmp_path / "cv.keras")
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((tmp_path / "cv.folds.json").read_text())
    assert len(report["accuracies"]) == 3
    assert report["mean_accuracy"] == pytest.approx(np.mean(report["accuracies"]))
    assert "3-fold cross-validation: accuracy" in result.output
    assert sorted(p.name for p in (tmp_path / "cv.folds").glob("*.keras")) == ["fold1.keras", "fold2.keras", "fold3.keras"]


# ------------------------------------------------------------------ bad input

def test_train_on_empty_folder(tmp_path):
    result = run("train", tmp_path, "--epochs", 1, "--out", tmp_path / "m.keras")
    assert result.exit_code == 2 and "no class folders" in result.stderr


@requires_fer2013
def test_corrupt_image_in_training_folder_is_skipped(fer_sample, tmp_path):
    data = copy_sample(fer_sample / "train", tmp_path / "d", 8)
    (data / "happy" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = run("train", data, "--epochs", 1, "--batch-size", 16, "--out", tmp_path / "m.keras")
    assert result.exit_code == 1, result.output + result.stderr  # trained, but not on every image given
    assert "corrupt.jpg" in result.stderr and "skipped 1 unreadable image" in result.output
    assert "1 unreadable image(s) were skipped" in result.stderr
    assert (tmp_path / "m.keras").is_file()


@requires_fer2013
def test_eval_with_unknown_class_name(tiny_model, tmp_path):
    write_image(tmp_path / "banana" / "1.png", np.zeros((48, 48), np.uint8))
    result = run("eval", tmp_path, "--model", tiny_model, "-o", tmp_path / "o")
    assert result.exit_code == 2 and "'banana'" in result.stderr and "matches none" in result.stderr


def test_missing_model_path(tmp_path):
    write_image(tmp_path / "happy" / "1.png", np.zeros((48, 48), np.uint8))
    result = run("eval", tmp_path, "--model", tmp_path / "nope.keras")
    assert result.exit_code == 2 and "not found" in result.stderr


def test_corrupt_model_file(tmp_path):
    write_image(tmp_path / "happy" / "1.png", np.zeros((48, 48), np.uint8))
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 garbage")
    result = run("eval", tmp_path, "--model", tmp_path / "bad.keras")
    assert result.exit_code == 2 and "not a valid fercli model" in result.stderr


def test_wrong_csv_header(tmp_path):
    (tmp_path / "fer.csv").write_text("a,b,c\n1,2,3\n")
    result = run("train", tmp_path / "fer.csv", "--epochs", 1, "--out", tmp_path / "m.keras")
    assert result.exit_code == 2 and "expected 'emotion,pixels,Usage'" in result.stderr


@requires_fer2013
def test_ensemble_averages_members_and_mirror_images(tiny_model, fer_sample, tmp_path):
    import shutil
    second = tmp_path / "second.keras"
    shutil.copy(tiny_model, second)
    result = run("ensemble", tiny_model, second, "--tta", "flip", "--out", tmp_path / "ens.keras", "--val", fer_sample / "val")
    assert result.exit_code == 0, result.output + result.stderr
    from fercli.data import read_class_folders
    data = read_class_folders(fer_sample / "val")
    # the network averages the members' raw probabilities; the ensemble's own calibration (fitted on --val) comes after
    member = EmotionModel(tiny_model).predict(data.images, calibrated=False)
    mirrored = EmotionModel(tiny_model).predict(data.images[:, :, ::-1].copy(), calibrated=False)
    combined = EmotionModel(tmp_path / "ens.keras")
    np.testing.assert_allclose(combined.predict(data.images, calibrated=False), (member + mirrored) / 2, atol=1e-5)
    meta = combined.metadata
    assert meta["ensemble"]["tta"] == ["image", "mirror"] and len(meta["ensemble"]["members"]) == 2
    # training records stay with each member instead of the first member's passing as the ensemble's
    assert "config" not in meta and meta["classes"] == EmotionModel(tiny_model).classes
    assert meta["ensemble"]["members"][0]["config"] == read_metadata(tiny_model)["config"]
    assert meta["calibration"]["n"] == len(data.labels)
    assert meta["val_accuracy"] == pytest.approx(float(np.mean(combined.predict(data.images).argmax(1) == data.labels)))


def test_ensemble_options_offer_what_the_model_module_builds():
    from fercli.cli import ensemble
    from fercli.architectures import TTA_VIEWS
    from fercli.modelfile import WEIGHT_DTYPES

    choices = {option.name: list(option.type.choices) for option in ensemble.params if option.name in ("tta", "weights_dtype")}
    assert choices == {"tta": list(TTA_VIEWS), "weights_dtype": list(WEIGHT_DTYPES)}


def test_ensemble_can_store_float16_weights(tmp_path):
    """--weights-dtype float16 halves the file; the weights load back as float32
    and the probabilities stay within 1e-3 of the float32 file's."""
    from fercli.modelfile import save_model

    member = tmp_path / "member.keras"   # float32 weights (the shipped models store float16 already)
    save_model(build_model("vgg-small", 7, 48), member, {"classes": ["angry", "disgust", "fear", "happy", "neutral", "sad",
                                                                     "surprise"], "input_size": 48, "arch": "vgg-small"})
    files = {}
    for dtype in ("float32", "float16"):
        files[dtype] = tmp_path / f"{dtype}.keras"
        result = run("ensemble", member, "--weights-dtype", dtype, "--out", files[dtype])
        assert result.exit_code == 0, result.output + result.stderr
    assert files["float16"].stat().st_size < 0.55 * files["float32"].stat().st_size
    faces = synthetic_faces(32)
    full, half = (EmotionModel(files[d], precision="float32") for d in ("float32", "float16"))
    assert half.metadata["weights_dtype"] == "float16" and {w.dtype for w in half.keras_model.weights} == {"float32"}
    difference = np.abs(full.predict(faces) - half.predict(faces)).max()
    assert 0 < difference < 1e-3


def test_crossed_views_give_each_network_one_view_in_turn(tmp_path):
    """--tta crossed: the first network sees the image, the second the mirror
    image with the centre 44 px enlarged back to 48 px; the file records which
    network saw what, and the data description only where both share it."""
    import keras
    import tensorflow as tf

    from fercli.modelfile import save_model

    classes = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    members = []
    for seed, data in ((1, "fer2013/train"), (2, "fer2013/train + ck_train")):
        keras.utils.set_random_seed(seed)
        members.append(tmp_path / f"member{seed}.keras")
        save_model(build_model("vgg-small", 7, 48), members[-1], {"classes": classes, "input_size": 48, "arch": "vgg-small",
                                                                  "data": data, "val_images": 10})
    result = run("ensemble", *members, "--tta", "crossed", "--out", tmp_path / "crossed.keras")
    assert result.exit_code == 0, result.output + result.stderr
    images = synthetic_faces(16)
    zoomed = tf.image.resize(images[:, 2:46, 2:46, None].astype(np.float32), (48, 48)).numpy()[..., 0]
    first, second = (EmotionModel(m, precision="float32") for m in members)
    expected = (first.predict(images, calibrated=False)
                + second.predict(np.ascontiguousarray(zoomed[:, :, ::-1]), calibrated=False)) / 2
    combined = EmotionModel(tmp_path / "crossed.keras", precision="float32")
    np.testing.assert_allclose(combined.predict(images), expected, atol=1e-4)
    meta = combined.metadata
    assert [m["views"] for m in meta["ensemble"]["members"]] == [["image"], ["zoom+mirror"]]
    assert meta["ensemble"]["tta"] == ["image", "zoom+mirror"]
    assert "data" not in meta and [m["data"] for m in meta["ensemble"]["members"]] == ["fer2013/train", "fer2013/train + ck_train"]
    assert meta["val_images"] == 10


@requires_fer2013
def test_zoom_test_time_views(tiny_model, fer_sample, tmp_path):
    """flip-zoom averages the image, its mirror and both with the centre 44 px
    enlarged back to 48 px; zoom-mirror the image and the enlarged mirror image."""
    import tensorflow as tf

    from fercli.data import read_class_folders
    images = read_class_folders(fer_sample / "val").images[:16]
    zoomed = tf.image.resize(images[:, 2:46, 2:46, None].astype(np.float32), (48, 48)).numpy()[..., 0]
    member = EmotionModel(tiny_model, precision="float32")
    views = {"image": images, "mirror": images[:, :, ::-1], "zoom": zoomed, "zoom+mirror": zoomed[:, :, ::-1]}
    for tta, names in {"flip-zoom": ["image", "mirror", "zoom", "zoom+mirror"], "zoom-mirror": ["image", "zoom+mirror"]}.items():
        result = run("ensemble", tiny_model, "--tta", tta, "--out", tmp_path / f"{tta}.keras")
        assert result.exit_code == 0, result.output + result.stderr
        expected = np.mean([member.predict(np.ascontiguousarray(views[name]), calibrated=False) for name in names], axis=0)
        combined = EmotionModel(tmp_path / f"{tta}.keras", precision="float32")
        np.testing.assert_allclose(combined.predict(images), expected, atol=1e-4)
        assert combined.metadata["ensemble"]["tta"] == names


@requires_fer2013
def test_init_continues_from_a_models_weights(tiny_model, fer_sample, tmp_path):
    """--init takes the network and weights of a model (its arch over --arch):
    with a tiny learning rate the result stays next to the start."""
    out = tmp_path / "restart.keras"
    result = run("train", fer_sample, "--init", tiny_model, "--arch", "vgg-small", "--epochs", 1, "--batch-size", 32,
                 "--lr", 1e-9, "--weight-decay", 0, "--out", out)
    assert result.exit_code == 0, result.output + result.stderr
    meta = read_metadata(out)
    assert meta["arch"] == "vgg" and meta["init"]["model"] == str(tiny_model)
    from fercli.modelfile import load_keras_model
    kernels = lambda path: [w for w in load_keras_model(path).get_weights() if w.ndim > 1]
    for before, after in zip(kernels(tiny_model), kernels(out)):
        np.testing.assert_allclose(before, after, atol=1e-5)


@requires_fer2013
def test_distillation_from_a_teacher(tiny_model, fer_sample, tmp_path):
    result = run("train", fer_sample, "--epochs", 1, "--batch-size", 32, "--teacher", tiny_model,
                 "--out", tmp_path / "student.keras")
    assert result.exit_code == 0, result.output + result.stderr
    meta = read_metadata(tmp_path / "student.keras")
    assert meta["teacher"]["model"] == str(tiny_model) and meta["teacher"]["distill_weight"] == 0.7
    from fercli.inference import default_precision
    assert meta["teacher"]["precision"] == default_precision()  # the teacher runs as inference does


def test_training_batches_mix_labels_with_the_teachers_probabilities():
    """Each epoch shows every image once, augmented, with targets 30% label +
    70% the teacher's probabilities on that same augmented batch."""
    from fercli.data import Dataset
    from fercli.train import TrainConfig, _training_batches

    data = Dataset(synthetic_faces(20), np.arange(20) % 2, ["a", "b"])
    teacher = build_model("vgg-small", 2, 48)
    weights = np.array([0.5, 2.0], np.float32)
    batches = _training_batches(data, TrainConfig(batch_size=8, distill_weight=0.7), weights, teacher)
    orders = []
    for epoch in range(2):
        labels = []
        for i in range(len(batches)):
            images, target, sample_weight = batches[i]
            assert images.shape[1:] == (48, 48, 1) and images.min() >= 0 and images.max() <= 255
            label_part = target - 0.7 * teacher.predict(images, verbose=0)
            assert np.allclose(np.sort(label_part, axis=1), [0.0, 0.3], atol=1e-5)
            labels += list(label_part.argmax(axis=1))
            assert np.allclose(sample_weight, weights[label_part.argmax(axis=1)])
        assert len(batches) == 3 and sorted(labels) == sorted(data.labels)
        orders.append(batches.order.copy())
        batches.on_epoch_end()
    assert sorted(orders[0]) == list(range(20)) and list(orders[0]) != list(orders[1])


def test_augmentation_is_random_but_reproducible():
    from keras import ops

    from fercli.augment import augment_batch

    faces = synthetic_faces(6)
    first, again, other = (ops.convert_to_numpy(augment_batch(faces, np.random.default_rng(seed))) for seed in (3, 3, 4))
    assert first.shape == (6, 48, 48, 1) and first.min() >= 0 and first.max() <= 255
    assert np.array_equal(first, again) and not np.allclose(first, other)


def test_training_on_the_jax_backend(tmp_path):
    """Keras' JAX backend (a GPU machine without TensorFlow) trains with the same
    augmentation, and its model file loads and predicts under TensorFlow."""
    pytest.importorskip("jax", reason="jax is in the test extras")
    from keras import ops

    from fercli.augment import augment_batch

    for i in range(12):
        for name, value in (("dark", 40), ("light", 200)):
            write_image(tmp_path / "data" / name / f"{i}.png", np.full((48, 48), value, np.uint8))
    faces = synthetic_faces(6)
    np.save(tmp_path / "faces.npy", faces)
    script = f"""
import sys, numpy as np, keras
from fercli.augment import augment_batch
np.save({str(tmp_path / "jax.npy")!r}, keras.ops.convert_to_numpy(augment_batch(np.load({str(tmp_path / "faces.npy")!r}), np.random.default_rng(3))))
from fercli.cli import main
try:
    main(["train", {str(tmp_path / "data")!r}, "--arch", "vgg-small", "--epochs", "2", "--batch-size", "8", "--val-split", "0.25",
          "--out", {str(tmp_path / "jax.keras")!r}])
except SystemExit as exit:
    print(keras.backend.backend(), exit.code)
"""
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.stdout.splitlines()[-1] == "jax 0", done.stdout + done.stderr
    assert np.allclose(np.load(tmp_path / "jax.npy"), ops.convert_to_numpy(augment_batch(faces, np.random.default_rng(3))), atol=1e-3)
    model = EmotionModel(tmp_path / "jax.keras")
    assert model.classes == ["dark", "light"] and model.metadata["epochs_trained"] >= 1
    probabilities = model.predict(faces)
    assert probabilities.shape == (6, 2) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)


def test_distributed_training_over_two_processes_keeps_identical_weights_and_resumes(tmp_path):
    """`train --distributed`: two processes (keras.distribution, JAX backend)
    share every batch; both end each epoch with the same weights, process 0
    writes --out, and both resume from their checkpoints."""
    pytest.importorskip("jax", reason="jax is in the test extras")
    import socket

    from fercli.modelfile import load_keras_model

    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("val", 8)):
        for name in ("happy", "sad"):
            for i in range(n):
                image = rng.integers(0, 256, (24, 24), dtype=np.uint8)
                image[12:] //= 3 if name == "happy" else 1
                write_image(tmp_path / "data" / split / name / f"{i}.png", image)
    out = tmp_path / "out" / "m.keras"

    def train_on_two_processes(epochs: int, *extra: str) -> list[str]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO))
        processes = [subprocess.Popen([sys.executable, "-m", "fercli", "train", str(tmp_path / "data"), "--arch", "vgg-small",
                                       "--img-size", "16", "--epochs", str(epochs), "--batch-size", "16", "--out", str(out),
                                       "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                       "--process-id", str(i), *extra], env=env, cwd=tmp_path, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
        logs = [p.communicate(timeout=600)[0] for p in processes]
        assert [p.returncode for p in processes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
        return logs

    def checkpoints():
        return [load_keras_model(folder / "m.keras.ckpt" / "last.keras").get_weights()
                for folder in (out.parent, out.parent / "m.keras.process1")]

    logs = train_on_two_processes(1)
    assert "saved" in logs[0] and "saved" not in logs[1]   # process 0 reports
    first, second = checkpoints()
    assert len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second))
    assert all(np.array_equal(a, b) for a, b in zip(first, load_keras_model(out).get_weights()))
    logs = train_on_two_processes(2, "--resume")
    assert "resuming from" in logs[0] and "after epoch 1" in logs[0]
    again, again_second = checkpoints()
    assert all(np.array_equal(a, b) for a, b in zip(again, again_second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, again))   # the second epoch trained
    assert json.loads((out.parent / "m.keras.ckpt" / "state.json").read_text())["epoch"] == 2


@requires_fer2013
@pytest.mark.parametrize("option", ["--teacher", "--init"])
def test_starting_model_with_other_classes_is_refused(option, tiny_model, tmp_path):
    ck = tmp_path / "ck"
    write_image(ck / "contempt" / "1.png", np.zeros((48, 48), np.uint8))
    write_image(ck / "happy" / "1.png", np.zeros((48, 48), np.uint8))
    result = run("train", ck, "--epochs", 1, "--val-split", 0, option, tiny_model, "--out", tmp_path / "x.keras")
    assert result.exit_code == 2 and option.strip("-") in result.stderr and "classes" in result.stderr


@requires_fer2013
def test_ema_saves_the_moving_average_of_the_weights(fer_sample, tmp_path):
    """With a momentum near 1 the average barely leaves its start (the weights
    after the first step), while the raw weights travel far at a high lr."""
    import keras

    from fercli.architectures import build_model
    from fercli.modelfile import load_keras_model
    moved = {}
    for ema in (0, 0.999999):
        out = tmp_path / f"ema{ema}.keras"
        result = run("train", fer_sample, "--arch", "vgg-small", "--epochs", 1, "--batch-size", 32, "--lr", 0.05,
                     "--ema", ema, "--out", out)
        assert result.exit_code == 0, result.output + result.stderr
        keras.utils.set_random_seed(0)  # train's default seed: the same initial weights
        start = build_model("vgg-small", 7, 48)
        saved = load_keras_model(out)
        moved[ema] = max(float(np.abs(a - b).max()) for a, b in zip(start.get_weights(), saved.get_weights())
                         if a.ndim > 1)  # kernels only (batch-norm statistics are not averaged)
    assert read_metadata(tmp_path / "ema0.999999.keras")["config"]["ema"] == 0.999999
    assert moved[0.999999] < 0.2 * moved[0], moved


def test_training_on_one_class_is_refused(tmp_path):
    for i in range(4):
        write_image(tmp_path / "data" / "happy" / f"{i}.png", synthetic_faces(4, seed=i)[0])
    result = run("train", tmp_path / "data", "--epochs", 1, "--out", tmp_path / "m.keras")
    assert result.exit_code == 2 and "only one class (happy)" in result.stderr
    assert not (tmp_path / "m.keras").exists()


def test_no_validation_data_is_said_and_a_damaged_checkpoint_state_is_a_sentence(tmp_path):
    faces = synthetic_faces(12, seed=3)
    for i, face in enumerate(faces):
        write_image(tmp_path / "data" / ("happy" if i % 2 else "sad") / f"{i}.png", face)
    out = tmp_path / "m.keras"
    result = run("train", tmp_path / "data", "--val-split", 0, "--arch", "vgg-small", "--epochs", 1, "--batch-size", 4, "--out", out)
    assert result.exit_code == 0, result.output + result.stderr
    assert "no validation data" in result.output and "val accuracy" not in result.output
    assert read_metadata(out)["val_accuracy"] is None
    state = tmp_path / "m.keras.ckpt" / "state.json"
    assert json.loads(state.read_text())["epoch"] == 1 and not list(state.parent.glob("*.partial"))
    state.write_text(state.read_text()[:40])  # as a kill in the middle of a plain write would leave it
    result = run("train", tmp_path / "data", "--val-split", 0, "--arch", "vgg-small", "--epochs", 2, "--batch-size", 4,
                 "--out", out, "--resume")
    assert result.exit_code == 2 and "damaged" in result.stderr
