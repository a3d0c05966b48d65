"""Accuracy against speed for every shipped model (or the --model files): FER-2013 PublicTest accuracy
(measured now on ../shared/data/fer2013/val when present, else the figure in the
model's metadata) and classifier crops/s at batch 64 in float32 and bfloat16.

    python benchmarks/bench_models.py [--data ../shared/data/fer2013/val] [--seconds 3] [--model FILE ...]

Prints figures; asserts nothing (timings on shared machines are noisy)."""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013" / "val"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--model", action="append", type=Path, help="a model file instead of the shipped ones (repeatable)")
    args = parser.parse_args()

    from fercli.evaluate import evaluate
    from fercli.inference import EmotionModel, measure_crops_per_s
    from fercli.modelfile import read_metadata, shipped_models

    have_data = Path(args.data).is_dir()
    print(f"{'model':<10} {'params':>8} {'PublicTest':>10} {'fp32 crops/s':>13} {'bf16 crops/s':>13}")
    for path in args.model or shipped_models():
        meta = read_metadata(path)
        accuracy = evaluate(args.data, str(path))[0]["accuracy"] if have_data else meta.get("val_accuracy")
        speeds = [measure_crops_per_s(EmotionModel(path, precision=p), seconds=args.seconds) for p in ("float32", "bfloat16")]
        shown = "unknown" if accuracy is None else f"{accuracy:.2%}"
        print(f"{path.stem:<10} {meta.get('parameters', 0) / 1e6:>7.2f}M {shown:>10} {speeds[0]:>13,.0f} {speeds[1]:>13,.0f}")
    if not have_data:
        print(f"(accuracy from the model metadata: {args.data} not found)")


if __name__ == "__main__":
    main()
