"""Where shipped files live (fercli/<name> when installed, <checkout>/<name> in a source tree), and how many threads to run."""
import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def cpu_threads() -> int:
    """The CPUs fercli may use: $FERCLI_THREADS (a Ray actor sets it to the
    CPUs it was given), else the CPUs this process may use."""
    import os

    if os.environ.get("FERCLI_THREADS", "").isdigit() and int(os.environ["FERCLI_THREADS"]) > 0:
        return int(os.environ["FERCLI_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def stage_threads() -> int:
    """Threads for the face detector and the classifier each where they run
    beside decoding and encoding (fercli.run overlaps them): half the CPUs, at
    least one. On 2 cores one thread each takes a third less CPU time than two
    for the same video, and finishes sooner (benchmarks/bench_video.py)."""
    return max(1, cpu_threads() // 2)


def onnx_session(network: bytes | str, threads: int | None = None):
    """An ONNX Runtime session on the CPU with `threads` (default
    stage_threads()), its log quiet. Its threads sleep between calls instead
    of spinning, as the other stages need the cores meanwhile."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or stage_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(network, options, providers=["CPUExecutionProvider"])


def cpu_features() -> str:
    """The CPU's model and the vector instruction sets that decide inference speed, for benchmark output."""
    import platform

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    named = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
             "avx512_bf16": "AVX512-BF16", "amx_tile": "AMX"}
    present = [label for flag, label in named.items() if flag in flags]
    return f"{model}, {os.cpu_count()} CPUs: " + (", ".join(present) or "no AVX2") + ("" if "avx512f" in flags else " (no AVX-512)")
