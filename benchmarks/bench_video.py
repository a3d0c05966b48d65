"""Video speed: frames/s of `fercli video` on a 640x480 and a 1280x720 clip
(12 s, 25 fps, two moving real faces), default settings and --every 1, with
each face detector; the wall time of the whole command, start-up included,
against the clip length.

    python benchmarks/bench_video.py [--model default] [--detector centerface --detector haar] [--fer-python PY]
        [--avx2-kernels]
    python benchmarks/bench_video.py --presets   # x264 presets: encoding CPU time, file size, PSNR

`--fer-python`: the Python of an environment with the `fer` package (e.g.
`python3 -m venv /tmp/fer && /tmp/fer/bin/pip install fer==25.10.3`), which
runs fer's `Video.analyze(FER(), frequency=3)` on the same clips, whole
process, against fercli's defaults. `--avx2-kernels`: both as on a CPU
without AVX-512 (benchmarks/avx2_kernels.py).
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FER_VIDEO = r"""
import sys
from fer.classes import Video
from fer.fer import FER
result = Video(sys.argv[1], outdir=sys.argv[2]).analyze(FER(mtcnn=False), display=False, frequency=3)
print(len(result))
"""


PRESETS = (("veryfast", 20), ("superfast", 23), ("ultrafast", 23), ("ultrafast", 24))


def encoder_presets(clip: Path, folder: Path) -> None:
    """The clip through fercli's VideoWriter with each (x264 preset, CRF):
    CPU time of reading and writing, file size, PSNR against the frames read."""
    import av
    import cv2
    import numpy as np

    from fercli.videoio import VideoReader, VideoWriter

    for preset, crf in PRESETS:
        out, frames = folder / f"{preset}{crf}.mp4", []
        start = time.process_time()
        with VideoReader(clip) as reader, VideoWriter(out, reader, x264={"crf": str(crf), "preset": preset}) as writer:
            for item in reader:
                writer.write(item, item.image)
                frames.append(item.image)
        cpu = time.process_time() - start
        with av.open(str(out)) as container:
            psnr = np.mean([cv2.PSNR(a, frame.to_ndarray(format="bgr24")) for a, frame in zip(frames, container.decode(video=0))])
        height, width = frames[0].shape[:2]
        print(f"{width}x{height} x264 {preset} CRF {crf}: {cpu:.2f} s CPU for {len(frames)} frames (decoding included), "
              f"{out.stat().st_size / 1e3:.0f} kB, PSNR {psnr:.2f} dB")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default", help="shipped model name or .keras file")
    parser.add_argument("--detector", action="append", help="face detector (repeatable; default: centerface and haar)")
    parser.add_argument("--fer-python", default=None, help="Python of an environment with fer 25.x, to time it on the same clips")
    parser.add_argument("--avx2-kernels", action="store_true", help="run both commands with AVX2 kernels only (avx2_kernels.py)")
    parser.add_argument("--presets", action="store_true", help="compare x264 presets on the clips instead (CPU time, size, PSNR)")
    args = parser.parse_args()
    from avx2_kernels import benchmark_setting

    # the figures below depend on its instruction sets
    prefix, fer_env, cpu_line = benchmark_setting(args.avx2_kernels)
    print(cpu_line)
    from tests.test_video import make_clip

    with tempfile.TemporaryDirectory(prefix="fercli_bench_video_") as tmp:
        tmp = Path(tmp)
        for width, height in ((640, 480), (1280, 720)):
            defaults_wall = None   # fercli's defaults with centerface, beside fer
            clip = tmp / f"clip{width}.avi"
            make_clip(clip, frames=300, fps=25, size=(width, height), face_side=140 if width == 640 else 220)
            if args.presets:
                encoder_presets(clip, tmp)
                continue
            for detector in args.detector or ["centerface", "haar"]:
                for extra in ([], ["--every", "1"]):
                    command = prefix([sys.executable, "-m", "fercli", "video", str(clip), "-o", str(tmp / "out"), "-q",
                                      "--model", args.model, "--detector", detector, *extra])
                    start = time.perf_counter()
                    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
                    wall = time.perf_counter() - start
                    print(f"{width}x{height} --detector {detector} {' '.join(extra) or '(defaults)'}: 300 frames (12.0 s of video) "
                          f"in {wall:.1f} s wall = {12.0 / wall:.2f}x real time ({300 / wall:.0f} frames/s incl. start-up); "
                          f"exit {result.returncode}")
                    if not extra and detector == "centerface":
                        defaults_wall = wall
            if args.fer_python:
                (tmp / "fer").mkdir(exist_ok=True)
                start = time.perf_counter()
                fer = subprocess.run([args.fer_python, "-c", FER_VIDEO, str(clip), str(tmp / "fer")], env=fer_env, capture_output=True,
                                     text=True, cwd=tmp / "fer")
                wall = time.perf_counter() - start
                print(f"{width}x{height} fer Video.analyze(frequency=3): {wall:.1f} s wall, exit {fer.returncode}"
                      + (f"; fercli's defaults {wall / defaults_wall:.2f}x as fast" if defaults_wall else ""))


if __name__ == "__main__":
    main()
