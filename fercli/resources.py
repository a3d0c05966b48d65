"""Where shipped files live (fercli/<name> when installed, <checkout>/<name> in a source tree), and how many threads to run."""
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def cpu_threads() -> int:
    """Threads for the face detector and the classifier each: $FERCLI_THREADS
    (a Ray actor sets it to the CPUs it was given), else the CPUs this process may use."""
    import os

    if os.environ.get("FERCLI_THREADS", "").isdigit() and int(os.environ["FERCLI_THREADS"]) > 0:
        return int(os.environ["FERCLI_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
