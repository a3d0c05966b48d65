"""Every shipped model (or --model files) in every runtime and precision:
classifier crops/s at batch 1 and 64, ms per 640x480 image through the whole
pipeline (CenterFace, alignment, classification; 1-2 faces per image), and
FER-2013 PublicTest accuracy when ../shared/data/fer2013/val is there (else the
figure recorded in the model file).

    python benchmarks/bench_models.py [--data ../shared/data/fer2013/val] [--seconds 2] [--model NAME ...]

Runtimes: ONNX Runtime (the .lite file: int8 and float32; what predict, video,
serve and eval run) and, where TensorFlow is installed, Keras (the .keras
file: float32 and bfloat16). Generates its own crops and images; prints
figures and asserts nothing (timings on shared machines are noisy)."""
import argparse
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def ms_per_image(analyzer, images, rounds: int = 2) -> float:
    analyzer.analyze(images[0])
    start = time.perf_counter()
    for _ in range(rounds):
        for image in images:
            analyzer.analyze(image)
    return (time.perf_counter() - start) * 1000 / (rounds * len(images))


def variants(name: str):
    """(runtime, precision, loader) for each way the model can run here."""
    from fercli.lite import LITE_SUFFIX, LiteModel
    from fercli.modelfile import resolve_model_path
    from fercli.tf_quiet import tensorflow_available

    path = resolve_model_path(name)
    if path.name.endswith(LITE_SUFFIX):
        for precision in LiteModel(path).metadata["precisions"]:
            yield "ONNX Runtime", precision, lambda p=precision: LiteModel(path, p)
    if tensorflow_available():
        try:
            keras_path = resolve_model_path(name, keras=True)
        except Exception:
            return
        from fercli.inference import EmotionModel

        for precision in ("float32", "bfloat16"):
            yield "Keras", precision, lambda p=precision: EmotionModel(keras_path, p)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013" / "val"))
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--images", type=int, default=12, help="640x480 images for the whole-pipeline figure")
    parser.add_argument("--model", action="append", help="a shipped name or model file (repeatable) [default: the shipped models]")
    args = parser.parse_args()
    from fercli.resources import cpu_features

    print(f"CPU: {cpu_features()}")   # the figures below depend on its instruction sets

    from fercli.data import read_dataset
    from fercli.evaluate import pick_split, scores
    from fercli.lite import measure_crops_per_s
    from fercli.modelfile import read_metadata, recorded_accuracy, shipped_model_names
    from fercli.pipeline import Analyzer
    from tests.conftest import scene_with_faces

    have_data = Path(args.data).is_dir()
    data = pick_split(read_dataset(args.data, 48), None) if have_data else None
    images = [scene_with_faces(1 + i % 2, size=(480, 640), face_side=140, seed=i)[0] for i in range(args.images)]
    print(f"{'model':<9} {'runtime':<12} {'precision':<9} {'crops/s b1':>10} {'crops/s b64':>11} {'ms/640x480':>10} "
          f"{'PublicTest':>10}")
    for name in args.model or shipped_model_names():
        for runtime, precision, load in variants(name):
            model = load()
            if have_data:
                labels = data.remap(model.classes)
                accuracy = f"{scores(labels.labels, model.predict(labels.images).argmax(1), model.classes)['accuracy']:.2%}"
            else:
                recorded, _ = recorded_accuracy(read_metadata(model.path), precision)
                accuracy = f"({recorded:.2%})" if recorded is not None else "-"
            speeds = [measure_crops_per_s(model, batch, args.seconds) for batch in (1, 64)]
            pipeline_ms = ms_per_image(Analyzer(model), images)
            print(f"{model.name:<9} {runtime:<12} {precision:<9} {speeds[0]:>10,.0f} {speeds[1]:>11,.0f} "
                  f"{pipeline_ms:>10.1f} {accuracy:>10}", flush=True)
    if not have_data:
        print(f"(accuracy in brackets: recorded in the model file; {args.data} not found)")


if __name__ == "__main__":
    main()
