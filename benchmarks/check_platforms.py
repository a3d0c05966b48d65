"""Does the lean install (setup.cfg's install_requires, read now) resolve to
wheels on every platform fercli targets? pip's own resolver answers, per
platform and Python version, without installing or building anything:

    pip install --dry-run --ignore-installed --only-binary=:all: --platform P
        --python-version V --implementation cp --report R.json <install_requires>

    python benchmarks/check_platforms.py [--python 3.12 ...] [-v]

Prints a table (what resolves, what is missing) and exits 0 when every
platform resolves for every version, else 1. Needs pip to reach its package
index (network); a developer's check, not part of fercli."""
import argparse
import configparser
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# pip matches manylinux_2_N tags exactly, so a Linux target lists every glibc up to its own
# (2.35: Ubuntu 22.04); a macOS tag stands for that version and every older one.
GLIBC = range(17, 36)
PLATFORMS = {
    "Windows x86-64": ["win_amd64"],
    "macOS arm64 (14)": ["macosx_14_0_arm64"],
    "Linux aarch64 (glibc 2.35)": [f"manylinux_2_{n}_aarch64" for n in GLIBC] + ["manylinux2014_aarch64"],
    "Linux x86-64 (glibc 2.35)": [f"manylinux_2_{n}_x86_64" for n in GLIBC] + ["manylinux2014_x86_64", "manylinux2010_x86_64",
                                                                              "manylinux1_x86_64"],
}
UNREACHABLE = re.compile(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
                         r"Network is unreachable|Max retries exceeded|ConnectTimeout|ProxyError|No route to host")


def install_requires() -> list[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = (line.split("#")[0].strip() for line in config["options"]["install_requires"].splitlines())
    return [line for line in lines if line]


def resolve(requirements: list[str], tags: list[str], python: str) -> tuple[list[str] | None, str]:
    """(wheel file names, "") when pip resolves, else (None, pip's error)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
                   "--python-version", python, "--implementation", "cp", "--report", str(report), "-q",
                   "--retries", "1", "--timeout", "20", *(f"--platform={tag}" for tag in tags), *requirements]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0 and report.is_file():
            return [item["download_info"]["url"].rsplit("/", 1)[-1] for item in json.loads(report.read_text())["install"]], ""
    if UNREACHABLE.search(done.stderr):
        raise ConnectionError
    errors = [line[len("ERROR: "):] for line in done.stderr.splitlines() if line.startswith("ERROR: ")]
    return None, (errors[-1] if errors else done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "pip failed")


def check(requirements: list[str], tags: list[str], python: str) -> tuple[str, list[str]]:
    """One cell of the table, and the wheels resolved."""
    wheels, _ = resolve(requirements, tags, python)
    if wheels is not None:
        return f"ok ({len(wheels)} wheels)", wheels
    missing = []   # which requirements fail alone, and what pip could not find for each
    for requirement in requirements:
        alone, reason = resolve([requirement], tags, python)
        if alone is None:
            found = re.search(r"No matching distribution found for (\S+)", reason)
            name = re.split(r"[<>=!~ ;\[]", requirement)[0]
            lacking = re.split(r"[<>=!~ ;\[]", found.group(1))[0] if found else None
            missing.append(name if lacking in (None, name) else f"{name} (needs {lacking})")
    return "MISSING: " + (", ".join(missing) if missing else "conflict, see pip"), []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", help="Python version to resolve for (repeatable) [default: 3.10-3.13]")
    parser.add_argument("-v", "--verbose", action="store_true", help="Also list the wheels each platform resolves to.")
    args = parser.parse_args()
    pythons = args.python or ["3.10", "3.11", "3.12", "3.13"]
    requirements = install_requires()
    print(f"setup.cfg install_requires: {' '.join(requirements)}")
    jobs = {(name, python): (tags, python) for name, tags in PLATFORMS.items() for python in pythons}
    try:
        with ThreadPoolExecutor(4) as pool:
            results = dict(zip(jobs, pool.map(lambda job: check(requirements, *job), jobs.values())))
    except ConnectionError:
        print("pip cannot reach its package index (no network, or a proxy or index setting in the way), so nothing was checked.")
        return 1
    width = max(len(name) for name in PLATFORMS)
    cells = {key: cell for key, (cell, _) in results.items()}
    columns = [max(len(f"Python {p}"), *(len(cells[n, p]) for n in PLATFORMS)) for p in pythons]
    print("\n" + " | ".join([f"{'platform':{width}}"] + [f"{'Python ' + p:{w}}" for p, w in zip(pythons, columns)]))
    print("-+-".join(["-" * width] + ["-" * w for w in columns]))
    for name in PLATFORMS:
        print(" | ".join([f"{name:{width}}"] + [f"{cells[name, p]:{w}}" for p, w in zip(pythons, columns)]))
    if args.verbose:
        for (name, python), (_, wheels) in results.items():
            if wheels:
                print(f"\n{name}, Python {python}:\n  " + "\n  ".join(sorted(wheels)))
    failed = sorted({f"{n} / Python {p}" for (n, p), cell in cells.items() if not cell.startswith("ok")})
    print("\n" + ("every platform resolves for every version." if not failed else f"not resolved: {'; '.join(failed)}."))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
