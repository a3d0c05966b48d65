"""Do the int8 networks answer on an AVX2-only CPU as on this one? Runs the
face detector (generated hard scenes) and the int8 classifiers (face crops)
here and again under QEMU's user-mode emulation of a CPU without AVX-512 or
VNNI, where ONNX Runtime picks its AVX2 kernels, and prints how far the
answers differ. QEMU's emulation is far slower than the CPU: it checks what
the networks compute, not how fast. For the classifiers it also runs each
int8 network with ONNX Runtime's graph optimizations off (every step in float
from its QDQ nodes), which tells the file's arithmetic from the kernels'.

    apt-get download qemu-user-static && dpkg-deb -x qemu-user-static_*.deb /tmp/qemu
    python benchmarks/check_avx2.py --qemu /tmp/qemu/usr/bin/qemu-x86_64-static [--cpu EPYC-Rome]
        [--scenes 6] [--crops 200] [--model default --model fast] [--centerface FILE.onnx ...]
    python benchmarks/check_avx2.py --avx2-kernels ...   # against benchmarks/avx2_kernels.py instead: seconds, not minutes
    python benchmarks/check_avx2.py --avx2-kernels --qemu QEMU --scenes 0 --crops 64 --model default   # the two against each other

Faces and crops come from FER-2013 val where ../shared/data has it, else the
test fixture portrait. Prints figures; asserts nothing."""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def dump(out: str, scenes: int, crops: int, models: list[str], centerfaces: list[str]) -> None:
    """What the networks answer on this (or the emulated) CPU, saved to `out`."""
    import zipfile

    import cv2
    import onnxruntime

    from fercli.data import to_gray
    from fercli.detect import CenterFaceDetector
    from fercli.inference import load_model
    from tests.scenes import KINDS, face_pool, load_face, make_scene

    pool, results = face_pool("val"), {}
    picked = [to_gray(load_face(pool[int(i)])[0]) for i in np.random.default_rng(0).integers(len(pool), size=crops)]
    for name in models:
        model = load_model(name, "int8", threads=1)
        size = model.input_size
        faces = np.stack([cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA) for face in picked])
        results[f"model {name}"] = model.predict(faces, calibrated=False)
        # the same int8 network with ONNX Runtime's graph optimizations off: each step computed in float from
        # its QDQ nodes, no fused int8 kernel (what the file's arithmetic gives exactly)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads, options.log_severity_level = 1, 3
        with zipfile.ZipFile(model.path) as archive:
            session = onnxruntime.InferenceSession(archive.read("int8.onnx"), options, providers=["CPUExecutionProvider"])
        results[f"unfused {name}"] = session.run(None, {session.get_inputs()[0].name: faces.astype(np.float32)[..., None]})[0]
    for path in centerfaces:
        detector, scene_rng = CenterFaceDetector(threads=1, model_path=path or None), np.random.default_rng(7)
        for k in range(scenes):
            found = detector.detect(make_scene(KINDS[k % len(KINDS)], pool, scene_rng).image)
            results[f"detector {path or 'shipped'} {k}"] = found.scores
    np.savez(out, **results)


def main():
    from fercli.resources import cpu_features

    parser = argparse.ArgumentParser()
    parser.add_argument("--qemu", help="qemu-x86_64(-static) binary")
    parser.add_argument("--avx2-kernels", action="store_true",
                        help="instead of QEMU, this CPU with its AVX-512 hidden (avx2_kernels.py: the same answers, far faster)")
    parser.add_argument("--cpu", default="EPYC-Rome", help="the emulated CPU (EPYC-Rome: AVX2 and FMA, no AVX-512)")
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--crops", type=int, default=200)
    parser.add_argument("--model", action="append", help="int8 classifiers to check (default: default and fast)")
    parser.add_argument("--centerface", action="append", help="CenterFace ONNX files to check (default: the shipped one)")
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args()
    models, centerfaces = args.model or ["default", "fast"], args.centerface or [""]
    if args.dump:
        return dump(args.dump, args.scenes, args.crops, models, centerfaces)
    if not args.qemu and not args.avx2_kernels:
        parser.error("give --qemu PATH, --avx2-kernels, or both (then the AVX2 kernels against QEMU)")
    from avx2_kernels import under_avx2_kernels

    sides = [("here", [])] if not (args.qemu and args.avx2_kernels) else []
    if args.avx2_kernels:
        sides.append(("AVX2 kernels", under_avx2_kernels([])))
    if args.qemu:
        sides.append((f"emulated {args.cpu}", [args.qemu, "-cpu", args.cpu]))
    (mine, _), (other, _) = sides
    print(f"CPU here: {cpu_features()}; {mine} against {other}")
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for k, (label, prefix) in enumerate(sides):
            out = str(Path(folder) / f"{k}.npz")
            command = prefix + [sys.executable, __file__, "--dump", out, "--scenes", str(args.scenes), "--crops", str(args.crops)]
            command += [a for m in models for a in ("--model", m)] + [a for c in centerfaces for a in ("--centerface", c)]
            done = subprocess.run(command, capture_output=True, text=True, check=False, env=dict(os.environ, FERCLI_THREADS="1"))
            if done.returncode:
                sys.exit(f"{label} run failed: {done.stderr[-1500:]}")
            runs.append(np.load(out))
    here, there = runs

    def apart(a, b) -> str:
        return (f"the same top class for {(a.argmax(1) == b.argmax(1)).mean():.1%}, probabilities differ by at most "
                f"{np.abs(a - b).max():.3f} (mean {np.abs(a - b).mean():.4f})")

    for name in models:
        fused, unfused = f"model {name}", f"unfused {name}"
        print(f"classifier {name} (int8, {len(here[fused])} crops, raw probabilities), {mine} against {other}: "
              f"{apart(here[fused], there[fused])}")
        print(f"  with graph optimizations off, {mine} against {other}: {apart(here[unfused], there[unfused])}")
        print(f"  fused kernels against optimizations off: {mine} {apart(here[fused], here[unfused])}; "
              f"{other} {apart(there[fused], there[unfused])}")
    for path in centerfaces:
        keys = [k for k in here.files if k.startswith(f"detector {path or 'shipped'} ")]
        found_here, found_there = sum(len(here[k]) for k in keys), sum(len(there[k]) for k in keys)
        same = [np.abs(np.sort(here[k]) - np.sort(there[k])).max() for k in keys if len(here[k]) == len(there[k]) and len(here[k])]
        print(f"detector {path or 'shipped'}: faces found {found_here} {mine}, {found_there} {other} over {len(keys)} scenes; "
              f"scores differ by at most {max(same, default=0):.3f} on the scenes with as many faces")


if __name__ == "__main__":
    main()
