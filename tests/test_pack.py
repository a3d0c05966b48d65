"""`fercli pack`: one file that read_dataset (so train and eval) reads as it reads the data packed."""
import zipfile

import cv2
import numpy as np
import pytest

from fercli.data import read_dataset
from fercli.errors import UserError
from fercli.modelfile import read_metadata
from tests.conftest import run, write_image
from tests.test_data import write_fer_csv

MOUTHS = {"happy": (0, 180), "sad": (180, 360), "surprise": (0, 360)}   # arc of the mouth per class


def face(kind: str, seed: int, side: int = 48) -> np.ndarray:
    """A drawn face: head, eyes, and a mouth whose shape tells the class; a little noise."""
    rng = np.random.default_rng(seed)
    image = np.full((side, side), rng.integers(20, 60), np.uint8)
    s = side / 48
    cv2.ellipse(image, (side // 2, side // 2), (int(17 * s), int(21 * s)), 0, 0, 360, int(rng.integers(150, 220)), -1)
    for x in (17, 31):
        cv2.circle(image, (int(x * s), int(19 * s)), max(1, int(3 * s)), 30, -1)
    start, end = MOUTHS[kind]
    cv2.ellipse(image, (side // 2, int(32 * s)), (int(8 * s), int(5 * s)), 0, start, end, 40, max(1, int(2 * s)))
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def make_tree(root, per_class: int, seed: int = 0):
    """Class folders of drawn faces in several encodings: JPEG, PNG, a colour JPEG, a larger image."""
    for c, kind in enumerate(MOUTHS):
        folder = root / ("Sadness" if kind == "sad" else kind)   # an alias: read as "sad"
        for i in range(per_class):
            image = face(kind, seed * 1000 + c * 100 + i, side=64 if i == 1 else 48)
            if i == 2:
                image = cv2.merge([image, np.roll(image, 1, axis=1), image // 2 + 40])
            write_image(folder / (f"{i}.png" if i % 3 == 0 else f"{i}.jpg"), image)
    return root


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    make_tree(root / "train", 8, seed=1)
    make_tree(root / "val", 3, seed=2)
    return root


def same(packed, folder):
    assert list(packed) == list(folder)
    for split in folder:
        a, b = packed[split], folder[split]
        assert a.classes == b.classes and a.sources == b.sources
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.images, b.images)


def test_a_pack_reads_as_the_folder_it_was_packed_from(data, tmp_path):
    result = run("pack", data, tmp_path / "data.npz")
    assert result.exit_code == 0, result.output + result.stderr
    assert "packed 33 images (train 24, val 9; 3 classes)" in result.output
    for size in (48, 32):   # the files' own bytes: the same images at any input size
        same(read_dataset(tmp_path / "data.npz", size), read_dataset(data, size))
    assert read_dataset(tmp_path / "data.npz")["val"].classes == ["happy", "sad", "surprise"]
    assert not list(tmp_path.glob("*.partial"))
    assert "train.labels" in np.load(tmp_path / "data.npz").files   # NumPy's .npz layout


def test_a_single_tree_and_a_fer2013_csv_pack_too(tmp_path):
    make_tree(tmp_path / "tree", 4)
    assert run("pack", tmp_path / "tree", tmp_path / "tree.npz").exit_code == 0
    same(read_dataset(tmp_path / "tree.npz"), read_dataset(tmp_path / "tree"))
    assert list(read_dataset(tmp_path / "tree.npz")) == ["all"]
    write_fer_csv(tmp_path / "fer2013.csv", rows_per_usage=4)
    assert run("pack", tmp_path / "fer2013.csv", tmp_path / "csv.npz").exit_code == 0
    same(read_dataset(tmp_path / "csv.npz"), read_dataset(tmp_path / "fer2013.csv"))
    same(read_dataset(tmp_path / "csv.npz", 40), read_dataset(tmp_path / "fer2013.csv", 40))


def test_an_unreadable_image_is_left_out_and_named(data, tmp_path):
    (data / "train" / "happy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = run("pack", data, tmp_path / "data.npz")
    assert result.exit_code == 1 and "broken.jpg" in result.stderr and "1 unreadable image(s) were skipped" in result.stderr
    packed = read_dataset(tmp_path / "data.npz")
    assert len(packed["train"]) == 24 and not any("broken" in s for s in packed["train"].sources)


def test_damaged_and_foreign_files_are_one_sentence(data, tmp_path):
    pack = tmp_path / "data.npz"
    assert run("pack", data, pack).exit_code == 0
    whole = pack.read_bytes()
    cases = {
        "cut.npz": (whole[:len(whole) // 2], "is a damaged fercli pack"),
        "foreign.zip": (None, "is a zip archive but not a fercli pack"),
        "numpy.npz": (None, "is a zip archive but not a fercli pack"),
        "noise.npz": (np.random.default_rng(0).bytes(500), "is not a data set"),
    }
    with zipfile.ZipFile(tmp_path / "foreign.zip", "w") as archive:
        archive.writestr("notes.txt", "hello")
    np.savez_compressed(tmp_path / "numpy.npz", images=np.zeros((2, 48, 48), np.uint8))
    # A byte of the first image's data changed: the archive's checksum no longer matches.
    with zipfile.ZipFile(pack) as archive:
        member = archive.getinfo("train.encoded.npy")
    flipped = bytearray(whole)
    flipped[member.header_offset + 30 + len(member.filename) + 200] ^= 0xFF
    cases["flipped.npz"] = (bytes(flipped), "is a damaged fercli pack")
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=message):
            read_dataset(tmp_path / name)
        result = run("train", tmp_path / name, "--epochs", 1, "--out", tmp_path / "m.keras")
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], (name, result.stderr)
    assert not (tmp_path / "m.keras").exists()


def test_an_input_is_never_overwritten(data, tmp_path):
    write_fer_csv(tmp_path / "fer2013.csv", rows_per_usage=2)
    before = (tmp_path / "fer2013.csv").read_bytes()
    result = run("pack", tmp_path / "fer2013.csv", tmp_path / "fer2013.csv")
    assert result.exit_code == 2 and "is one of the inputs" in result.stderr
    assert (tmp_path / "fer2013.csv").read_bytes() == before
    image = data / "train" / "happy" / "0.png"
    before = image.read_bytes()
    result = run("pack", data, image)
    assert result.exit_code == 2 and "is one of the inputs" in result.stderr and image.read_bytes() == before
    assert run("pack", data, tmp_path / "data.npz").exit_code == 0
    result = run("pack", tmp_path / "data.npz", tmp_path / "again.npz")
    assert result.exit_code == 2 and "is a pack already" in result.stderr
    # A failed pack leaves an existing file as it was.
    kept = (tmp_path / "data.npz").read_bytes()
    result = run("pack", tmp_path / "missing", tmp_path / "data.npz")
    assert result.exit_code == 2 and (tmp_path / "data.npz").read_bytes() == kept
    result = run("pack", data, tmp_path)
    assert result.exit_code == 2


def test_train_and_eval_read_a_pack(data, tmp_path):
    assert run("pack", data, tmp_path / "data.npz").exit_code == 0
    out = tmp_path / "m.keras"
    result = run("train", tmp_path / "data.npz", "--arch", "vgg-small", "--epochs", 1, "--batch-size", 8, "--out", out)
    assert result.exit_code == 0, result.output + result.stderr
    assert "training on 24 images" in result.output and "validation: 9 images (train split; val split" in result.output
    meta = read_metadata(out)
    assert meta["classes"] == ["happy", "sad", "surprise"] and meta["data"] == f"{tmp_path / 'data.npz'} [train]"
    result = run("eval", tmp_path / "data.npz", "--model", out, "-o", tmp_path / "eval", "--predictions", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output + result.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 10 and rows[1].startswith(str(data / "val" / "happy" / "0.png"))
