"""Run a command as an AVX2-only CPU would run it, at this CPU's own speed: ONNX
Runtime, OpenCV, NumPy and oneDNN use their AVX2 code paths, not AVX-512 or
AVX512-VNNI, so figures for CPUs without AVX-512 can be measured on a CPU with
it (the same cores running the other kernels; not an AVX2-only CPU's clock or
caches).

    python benchmarks/avx2_kernels.py -- fercli predict photos/ -o out

ONNX Runtime chooses its kernels from CPUID and XCR0 and has no setting for
it, so the command runs under gdb: after each `xgetbv` in ONNX Runtime's
library (found with objdump) the AVX-512 state bits of XCR0 are cleared, and
ONNX Runtime takes the CPU for one without AVX-512 (its int8 kernels then sum
with VPMADDUBSW, as on such CPUs; `check_avx2.py --avx2-kernels --qemu QEMU`
shows the int8 probabilities equal to those on QEMU's emulated AVX2 CPU, bit
for bit). OpenCV, NumPy and
oneDNN (TensorFlow, for `fer`) are limited by their own environment
variables, `environment()`. gdb's start costs 0.7 s (predict) to 1.5 s
(video, which loads more libraries) of wall time, counted in the command's.
Needs gdb and objdump (binutils) on Linux x86-64."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

AVX512_STATE = 0xE0   # XCR0 bits 5-7: opmask, ZMM_Hi256, Hi16_ZMM

GDB_SCRIPT = r"""
import gdb
OFFSETS = {offsets}
masked = []

class ClearAvx512State(gdb.Breakpoint):
    def stop(self):
        eax = int(gdb.parse_and_eval("$eax")) & 0xffffffff
        gdb.execute("set $eax = %d" % (eax & ~{state}), to_string=True)
        masked.append(self.location)
        return False

def on_new_objfile(event):
    name = event.new_objfile.filename or ""
    if name not in OFFSETS:
        return
    for line in gdb.execute("info proc mappings", to_string=True).splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] == name and int(parts[3], 16) == 0:
            for offset in OFFSETS[name]:
                ClearAvx512State("*%#x" % (int(parts[0], 16) + offset), internal=True)
            OFFSETS.pop(name)
            return

def on_exit(event):
    import sys
    sys.stderr.write("avx2_kernels: ONNX Runtime read XCR0 %d times, each without the AVX-512 state\n" % len(masked))

gdb.events.new_objfile.connect(on_new_objfile)
gdb.events.exited.connect(on_exit)
"""


def environment() -> dict:
    """The variables that keep OpenCV, NumPy and oneDNN to AVX2."""
    return {
        "OPENCV_CPU_DISABLE": "AVX512F,AVX512CD,AVX512BW,AVX512DQ,AVX512VL,AVX512-SKX",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR",   # NumPy 2 and 1 names
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    }


def xgetbv_offsets(library: str) -> list[int]:
    """Offsets in `library` of the instruction after each `xgetbv` (the breakpoint: XCR0 is then in eax).
    The offsets are virtual addresses, which for these libraries equal file offsets from the load base.
    Disassembling takes seconds: the offsets are kept in ~/.cache/fercli/ per library file."""
    stat = os.stat(library)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fercli" / "avx2_kernels.json"
    key = f"{library}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", library], capture_output=True, text=True, check=True).stdout
        known[key] = [int(m.group(1), 16) + 3 for m in re.finditer(r"^\s*([0-9a-f]+):\s+xgetbv", listing, re.MULTILINE)]
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(cache.name + f".{os.getpid()}")
        partial.write_text(json.dumps(known))
        os.replace(partial, cache)
    return known[key]


def onnxruntime_library() -> str:
    """The library Python's onnxruntime runs (it holds the kernels)."""
    import onnxruntime

    capi = Path(onnxruntime.__file__).resolve().parent / "capi"
    return str(Path(next(iter(glob.glob(str(capi / "onnxruntime_pybind11_state*.so"))))).resolve())


def command_line(command: list[str], script: str) -> list[str]:
    """`command` under gdb with the script that hides AVX-512 from ONNX Runtime. A console script
    (fercli) is a Python file to gdb: it runs as `python SCRIPT`."""
    first = shutil.which(command[0]) or command[0]
    with open(first, "rb") as handle:
        if handle.read(2) == b"#!":
            command = [sys.executable, first] + command[1:]
    settings = ["set pagination off", "set confirm off", "handle all nostop noprint pass", "set print thread-events off",
                "set print inferior-events off"]
    return (["gdb", "-q", "-batch", "-nx"] + [a for s in settings for a in ("-ex", s)]
            + ["-x", script, "-ex", "run", "-ex", "quit $_exitcode", "--args"] + command)


def under_avx2_kernels(command: list[str]) -> list[str]:
    """`command` as one that runs it with the AVX2 kernels (for benchmarks that start commands; the first
    call finds ONNX Runtime's `xgetbv`s, so that the timed runs do not)."""
    xgetbv_offsets(onnxruntime_library())
    return [sys.executable, str(Path(__file__).resolve()), "--"] + command


KERNELS_NOTE = "AVX2 kernels only (AVX-512 hidden by benchmarks/avx2_kernels.py; its gdb start, 0.7-1.5 s, included)"


def benchmark_setting(avx2_kernels: bool):
    """For a benchmark's `--avx2-kernels` flag: (what turns a fercli command into
    the one to run, the environment for `fer`, the CPU line to print first).
    `fer` runs no ONNX Runtime: its libraries' variables suffice (gdb would
    slow TensorFlow's start-up manyfold)."""
    from fercli.resources import cpu_features

    if not avx2_kernels:
        return list, None, f"CPU: {cpu_features()}"
    return under_avx2_kernels, dict(os.environ, **environment()), f"CPU: {cpu_features()}; {KERNELS_NOTE}"


def run(command: list[str]) -> int:
    for tool in ("gdb", "objdump"):
        if shutil.which(tool) is None:
            sys.exit(f"avx2_kernels needs {tool} (apt-get install gdb binutils).")
    library = onnxruntime_library()
    offsets = {library: xgetbv_offsets(library)}
    with tempfile.TemporaryDirectory(prefix="avx2_kernels_") as folder:
        script = Path(folder) / "hide_avx512.py"
        script.write_text(GDB_SCRIPT.format(offsets=repr(offsets), state=AVX512_STATE))
        done = subprocess.run(command_line(command, str(script)), env=dict(os.environ, **environment()), check=False)
    return done.returncode


def main() -> None:
    command = sys.argv[2:] if sys.argv[1:2] == ["--"] else sys.argv[1:]
    if not command or command[0].startswith("-"):
        sys.exit(f"usage: {sys.argv[0]} -- COMMAND [ARGS ...]   (benchmarks/check_avx2.py compares the answers)")
    sys.exit(run(command))


if __name__ == "__main__":
    main()
