import cv2
import numpy as np
import pytest

from fercli.explain import Explainer
from fercli.inference import EmotionModel
from fercli.modelfile import save_model
from tests.conftest import REPO, run, scene_with_faces, write_image


def square_image(rng, top: bool | None) -> np.ndarray:
    image = rng.integers(0, 70, (48, 48)).astype(np.uint8)
    if top is not None:
        y = 4 if top else 30
        image[y:y + 14, 4:18] = 255
    return image


@pytest.fixture(scope="module")
def corner_model(tmp_path_factory):
    """A small CNN trained here to tell a bright square at the top-left from one at
    the bottom-left and from none (so each class needs evidence where its square is)."""
    root = tmp_path_factory.mktemp("corners")
    rng = np.random.default_rng(0)
    for i in range(300):
        write_image(root / "data" / "upper" / f"{i}.png", square_image(rng, top=True))
        write_image(root / "data" / "lower" / f"{i}.png", square_image(rng, top=False))
        write_image(root / "data" / "none" / f"{i}.png", square_image(rng, top=None))
    result = run("train", root / "data", "--arch", "vgg-small-flat", "--epochs", 6, "--batch-size", 32, "--label-smoothing", 0,
                 "--val-split", 0.2, "--out", root / "corners.keras")
    assert result.exit_code == 0, result.output + result.stderr
    return EmotionModel(root / "corners.keras")


def test_map_peaks_where_the_evidence_is(corner_model):
    rng = np.random.default_rng(1)
    explainer = Explainer(corner_model)
    for top in (True, False):
        name = "upper" if top else "lower"
        images = np.stack([square_image(rng, top=top) for _ in range(8)])
        assert [corner_model.classes[i] for i in corner_model.predict(images).argmax(1)] == [name] * 8
        # The mean of 8 maps: Grad-CAM works on a 6x6 feature grid (8 px cells), so one
        # map's hottest pixel can sit a cell outside its square; where the weight lies cannot.
        heat = explainer.heatmaps(images, np.full(8, corner_model.classes.index(name))).mean(axis=0)
        square = heat[4:18, 4:18] if top else heat[30:44, 4:18]
        other = heat[30:44, 4:18] if top else heat[4:18, 4:18]
        assert (heat[:24].sum() > heat[24:].sum()) == top
        assert square.mean() > 2 * other.mean()


def test_explain_writes_one_map_per_face(tmp_path):
    scene, truth = scene_with_faces(2)
    write_image(tmp_path / "scene.jpg", scene)
    result = run("explain", "-p", tmp_path / "scene.jpg", "-o", tmp_path / "out", "--class", "Happiness")
    assert result.exit_code == 0, result.stderr
    maps = sorted((tmp_path / "out").glob("scene.face*.cam.png"))
    assert [p.name for p in maps] == ["scene.face0.cam.png", "scene.face1.cam.png"]
    assert (tmp_path / "out" / "scene.jpg").is_file()
    result = run("predict", "-p", tmp_path / "scene.jpg", "-o", tmp_path / "out2", "--explain")
    assert result.exit_code == 0 and len(list((tmp_path / "out2").glob("*.cam.png"))) == 2
    result = run("explain", "-p", tmp_path / "scene.jpg", "-o", tmp_path / "out3", "--class", "banana")
    assert result.exit_code == 2 and "'banana'" in result.stderr


def test_model_without_convolutions_is_a_clear_error(tmp_path):
    import keras

    inputs = keras.Input((48, 48, 1))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    save_model(keras.Model(inputs, outputs), tmp_path / "dense.keras", {"classes": ["happy", "sad"], "input_size": 48})
    write_image(tmp_path / "a.png", np.zeros((60, 60, 3), np.uint8))
    result = run("explain", "-p", tmp_path / "a.png", "--model", tmp_path / "dense.keras", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "no convolutional layer" in result.stderr


def test_shipped_models_give_maps_with_a_peak():
    """Real faces through the shipped models: a map that is empty or flat explains nothing."""
    from fercli.pipeline import Analyzer

    image = cv2.imread(str(REPO / "docs" / "example.jpg"))
    for name in ("default", "accurate", "fast"):
        analyzer = Analyzer(name)
        faces = analyzer.analyze(image)
        assert len(faces) == 1
        crops = analyzer.crops(image, faces)
        maps = Explainer(analyzer.model).heatmaps(crops, np.array([analyzer.classes.index(f.emotion) for f in faces]))
        for heat in maps:
            assert heat.max() > 0.9 and heat.std() > 0.1 and np.mean(heat > 0.5) < 0.6
