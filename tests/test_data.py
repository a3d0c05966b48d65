import numpy as np
import pytest

from fercli.data import (FER2013_CSV_CLASSES, prepare_face, read_class_folders, read_dataset,
                         read_fer2013_csv, stratified_folds, stratified_split)
from fercli.errors import UserError
from tests.conftest import synthetic_faces, write_image


def write_fer_csv(path, rows_per_usage=10, side=48, header="emotion,pixels,Usage"):
    rng = np.random.default_rng(1)
    lines, expected = [header], []
    for usage in ("Training", "PublicTest", "PrivateTest"):
        for i in range(rows_per_usage):
            label = i % 7
            pixels = rng.integers(0, 256, side * side)
            lines.append(f"{label},{' '.join(map(str, pixels))},{usage}")
            expected.append((usage, label, pixels.reshape(side, side)))
    path.write_text("\n".join(lines) + "\n")
    return expected


def test_fer2013_csv_splits_labels_and_pixels(tmp_path):
    expected = write_fer_csv(tmp_path / "fer2013.csv")
    splits = read_fer2013_csv(tmp_path / "fer2013.csv")
    assert sorted(splits) == ["test", "train", "val"]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [10, 10, 10]
    assert splits["train"].classes == FER2013_CSV_CLASSES  # 0..6 = Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral
    usage, label, pixels = expected[13]  # 4th PublicTest row
    assert usage == "PublicTest"
    assert splits["val"].labels[3] == label
    np.testing.assert_array_equal(splits["val"].images[3], pixels)


def test_fer2013_csv_resized_like_predict(tmp_path):
    write_fer_csv(tmp_path / "f.csv", rows_per_usage=2)
    raw = np.array(open(tmp_path / "f.csv").read().splitlines()[1].split(",")[1].split(), dtype=np.uint8).reshape(48, 48)
    splits = read_fer2013_csv(tmp_path / "f.csv", size=32)
    np.testing.assert_array_equal(splits["train"].images[0], prepare_face(raw, 32))


def test_fer2013_csv_wrong_header_is_a_clear_error(tmp_path):
    write_fer_csv(tmp_path / "bad.csv", rows_per_usage=1, header="label,image,split")
    with pytest.raises(UserError, match="expected 'emotion,pixels,Usage'"):
        read_fer2013_csv(tmp_path / "bad.csv")


def test_class_folders_aliases_colour_and_size(tmp_path):
    faces = synthetic_faces(6, size=96)
    for i, folder in enumerate(["Anger", "happiness", "Sadness"]):
        write_image(tmp_path / folder / "a.png", faces[2 * i])
        colour = np.dstack([faces[2 * i + 1]] * 3)
        write_image(tmp_path / folder / "b.png", colour)
    ds = read_class_folders(tmp_path)
    assert ds.classes == ["angry", "happy", "sad"]
    assert ds.images.shape == (6, 48, 48) and ds.images.dtype == np.uint8
    assert list(ds.labels) == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(ds.images[0], prepare_face(faces[0], 48))
    np.testing.assert_array_equal(ds.images[1], prepare_face(np.dstack([faces[1]] * 3), 48))


def test_split_folders_and_unknown_class(tmp_path):
    faces = synthetic_faces(4)
    write_image(tmp_path / "train" / "happy" / "1.png", faces[0])
    write_image(tmp_path / "train" / "sad" / "1.png", faces[1])
    write_image(tmp_path / "val" / "sadness" / "1.png", faces[2])
    write_image(tmp_path / "val" / "happy" / "1.png", faces[3])
    splits = read_dataset(tmp_path)
    assert sorted(splits) == ["train", "val"]
    assert splits["val"].classes == ["happy", "sad"] and list(splits["val"].labels) == [0, 1]
    with pytest.raises(UserError, match="'sad'.*matches none"):
        splits["val"].remap(["angry", "happy"])


def test_corrupt_image_is_skipped_and_counted(tmp_path):
    write_image(tmp_path / "happy" / "ok.png", synthetic_faces(1)[0])
    (tmp_path / "happy" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "happy" / "empty.png").write_bytes(b"")
    warnings = []
    ds = read_class_folders(tmp_path, warn=lambda path, reason: warnings.append((path, reason)))
    assert len(ds) == 1 and len(ds.skipped) == 2 and len(warnings) == 2
    assert any("0 bytes" in reason for _, reason in warnings)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no class folders"):
        read_dataset(tmp_path)
    (tmp_path / "happy").mkdir()
    with pytest.raises(UserError, match="no readable images"):
        read_dataset(tmp_path)


def test_stratified_split_and_folds_keep_class_shares():
    labels = np.array([0] * 100 + [1] * 20)
    train, held = stratified_split(labels, 0.25, seed=3)
    assert np.bincount(labels[held]).tolist() == [25, 5]
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == 120
    folds = stratified_folds(labels, 4, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(120))
    assert all(np.bincount(labels[f], minlength=2).tolist() == [25, 5] for f in folds)
