"""The whole `fercli eval` command, int8 (the default) against
FERCLI_PRECISION=float32: wall time of each, start-up, reading and charts
included, runs interleaved and the fastest of each printed, with the CPU's
instruction sets. The crops are FER-2013 val where ../shared/data has it (or
--data), else 3,589 crops made from the test fixture portrait (mirrored, darkened: the
network's time does not depend on what it sees, and the accuracy printed then
means nothing).

    python benchmarks/bench_eval.py [--data ../shared/data/fer2013/val] [--model default] [--runs 3] [--avx2-kernels]

`--avx2-kernels`: as on a CPU without AVX-512 (benchmarks/avx2_kernels.py).
Prints figures; asserts nothing (timings on shared machines are noisy)."""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FER_VAL = REPO.parent / "shared" / "data" / "fer2013" / "val"
CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def make_crops(folder: Path, count: int = 3589, seed: int = 0) -> None:
    """`count` JPEG crops in class folders: the fixture face as training prepares it, mirrored and darkened at random."""
    from fercli.data import prepare_face
    from tests.scenes import FIXTURE_FACE, FIXTURE_FACE_CLASS, load_face

    face = prepare_face(load_face((FIXTURE_FACE, FIXTURE_FACE_CLASS))[0], 48)
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    for i in range(count):
        crop = (face[:, ::-1] if rng.random() < 0.5 else face) * rng.uniform(0.5, 1.0)
        cv2.imwrite(str(folder / CLASSES[i % len(CLASSES)] / f"crop{i:05d}.jpg"), crop.astype(np.uint8))


def main():
    from avx2_kernels import benchmark_setting

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(FER_VAL) if FER_VAL.is_dir() else None, help="labelled crops [default: FER-2013 val, else generated; \"\": generated]")
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=3, help="runs of each precision, interleaved; the fastest is printed")
    parser.add_argument("--avx2-kernels", action="store_true", help="run the commands with AVX2 kernels only (avx2_kernels.py)")
    args = parser.parse_args()
    prefix, _, cpu_line = benchmark_setting(args.avx2_kernels)
    print(cpu_line)
    with tempfile.TemporaryDirectory(prefix="fercli_bench_eval_") as tmp:
        data = args.data or None
        if data is None:
            data = str(Path(tmp) / "crops")
            make_crops(Path(data))
        command = prefix([sys.executable, "-m", "fercli", "eval", data, "--model", args.model, "-o", str(Path(tmp) / "out")])
        walls, accuracy = {"int8": [], "float32": []}, {}
        for _ in range(args.runs):
            for precision in walls:
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, FERCLI_PRECISION=precision))
                walls[precision].append(time.perf_counter() - start)
                if done.returncode:
                    sys.exit(f"eval failed: {done.stderr[-1500:]}")
                found = re.search(r"accuracy\s+([\d.]+)%", done.stdout)
                accuracy[precision] = found.group(1) if found else "?"
    source = args.data or "generated crops (accuracy meaningless)"
    for precision, times in walls.items():
        print(f"fercli eval {args.model} {precision} on {source}: {min(times):.2f} s wall (runs {', '.join(f'{t:.2f}' for t in times)}), "
              f"accuracy {accuracy[precision]}%")
    print(f"int8 {min(walls['float32']) / min(walls['int8']):.2f}x as fast as float32, whole command")


if __name__ == "__main__":
    main()
