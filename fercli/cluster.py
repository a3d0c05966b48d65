"""`--engine ray`: the same Analyzer, the same loop (fercli.run) and the same
record sink as the local engine, mapped over a Ray dataset.

The driver lists the inputs, leaves out what `--resume` finds done, and
writes every record itself (CSV, JSON Lines, Parquet), so rows come out as
the local engine writes them. Ray Data spreads the inputs over a pool of
actors, each of which builds one Analyzer (model and detector loaded once) and
runs its share through fercli.run; annotated copies are written by the actors
under the output folder (on a cluster of several machines: a folder they all
mount). A worker that dies is restarted by Ray and its unfinished batches
are run again (`max_restarts`, `max_task_retries`).

Sources are local paths (which every worker must see: one machine, or a
shared mount) or object-storage URIs (s3://, gs://, ...) read through
PyArrow's filesystems, as Ray Data reads them; the filesystem's Python
package (e.g. s3fs, gcsfs) must be installed where fercli runs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np

from fercli.data import IMAGE_SUFFIXES, decode_image, read_image_file
from fercli.errors import UserError
from fercli.run import RunStats
from fercli.sinks import AnnotatedImageSink, Sink
from fercli.sources import InputFile, real_path
from fercli.tf_quiet import quietly

RAY_EXTRA = 'pip install "fercli[ray]"'
IMAGES_PER_BATCH = 8   # inputs per actor call: small enough to spread a few hundred images over every actor


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError(f"--engine ray needs Ray, which is not installed: {RAY_EXTRA}.") from None
    return ray


def is_uri(path: str) -> bool:
    return "://" in str(path)


def collect_uri_images(uri: str, recursive: bool) -> tuple[list[InputFile], int]:
    """The image files under an object-storage URI (or one image's URI), listed
    through PyArrow's filesystems; their paths stay URI strings."""
    import pyarrow.fs

    try:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(root)
        if info.type == pyarrow.fs.FileType.File:
            entries, base = [info], PurePosixPath(root).parent
        elif info.type == pyarrow.fs.FileType.Directory:
            entries, base = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=recursive)), PurePosixPath(root)
        else:
            raise UserError(f"{uri} does not exist.")
    except (OSError, ValueError, ImportError) as exc:
        raise UserError(f"cannot list {uri} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}).") from None
    scheme = uri.split("://", 1)[0]
    inputs, not_images = [], 0
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.type != pyarrow.fs.FileType.File:
            continue
        if PurePosixPath(entry.path).suffix.lower() in IMAGE_SUFFIXES:
            # a str: Path would fold the //
            inputs.append(InputFile(f"{scheme}://{entry.path}", Path(PurePosixPath(entry.path).relative_to(base))))
        else:
            not_images += 1
    if not inputs:
        raise UserError(f"no images found in {uri} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}"
                        + ("" if recursive else "; -r also searches subfolders") + ").")
    return inputs, not_images


def read_any(path: str) -> np.ndarray:
    """A local file or an object-storage URI, decoded as read_image_file does."""
    if not is_uri(path):
        return read_image_file(path)
    import pyarrow.fs

    try:
        filesystem, location = pyarrow.fs.FileSystem.from_uri(path)
        with filesystem.open_input_stream(location) as stream:
            raw = np.frombuffer(stream.read(), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return decode_image(raw)


class RowCollector(Sink):
    """Stands in for the record sink on a worker: keeps what RecordSink.write
    would be given (the item without its pixels, and its faces)."""

    def __init__(self):
        self.rows: list[tuple] = []   # (Item without pixels, Faces)

    def write(self, item, faces) -> None:
        self.rows.append((replace(item, image=None), faces))


class _ActorBase:
    """One Analyzer per Ray actor, built from the options the local engine would use."""

    def __init__(self, analyzer_options: dict):
        import ray

        logging.getLogger("ray").setLevel(logging.ERROR)
        # As many threads as CPUs this actor was given, not as the machine has: actors share a node.
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:
            os.environ["FERCLI_THREADS"] = str(max(1, round(cpus)))
        from fercli.pipeline import Analyzer

        self.analyzer = Analyzer(**analyzer_options)


class AnalyzeImages(_ActorBase):
    """Ray Data actor: a batch of (path, relative) through fercli.run."""

    def __init__(self, analyzer_options: dict, output: str | None, inputs: set[Path], landmarks: bool):
        super().__init__(analyzer_options)
        self.sinks = [AnnotatedImageSink(Path(output), inputs, landmarks)] if output else []

    def __call__(self, batch: dict) -> dict:
        from fercli.run import run
        from fercli.sources import image_items

        files = [InputFile(p if is_uri(p) else Path(p), Path(r)) for p, r in zip(batch["path"], batch["relative"])]
        collected = RowCollector()
        run(image_items(files, read=read_any), self.analyzer, collected, self.sinks)
        return {"rows": np.array([pickle.dumps(row) for row in collected.rows], dtype=object)}


class AnalyzeVideos(_ActorBase):
    """Ray Data actor: one video per call through fercli.video.analyze_video."""

    def __init__(self, analyzer_options: dict, output: str, inputs: set[Path], options):
        super().__init__(analyzer_options)
        self.output, self.inputs, self.options = Path(output), inputs, options

    def __call__(self, batch: dict) -> dict:
        from fercli.video import analyze_video

        results = []
        for path, relative in zip(batch["path"], batch["relative"]):
            collected, warnings = RowCollector(), []
            result, failed = analyze_video(InputFile(Path(path), Path(relative)), self.analyzer, collected, self.output,
                                           self.inputs, replace(self.options, progress=False, show=False),
                                           on_error=lambda source, why: warnings.append((source, why)))
            results.append(pickle.dumps((collected.rows, result, failed, warnings)))
        return {"result": np.array(results, dtype=object)}


@contextlib.contextmanager
def ray_session(address: str | None):
    """Connect to the cluster at `address` ("auto", "ray://host:10001"), or
    start a local one that ends with the command."""
    ray = require_ray()
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")   # the C++ core's notes
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    started = not ray.is_initialized()
    if started and address and address != "auto":
        _check_reachable(address)
    if started:
        with quietly(defer_interrupts=False):   # Ray's start-up notes; fercli prints its own progress
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR, configure_logging=True)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"cannot reach the Ray cluster at {address} ({str(exc).splitlines()[0]}).") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.verbose_stats_logs = False
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, with a sentence, where nothing listens at HOST:PORT
    (Ray itself retries a missing head for minutes)."""
    import socket

    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except ValueError:
        raise UserError(f"--address {address} is not HOST:PORT, ray://HOST:PORT or auto.") from None
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}).") from None


def _actor_pool(ray, workers: int | None, cpus_per_worker: float) -> dict:
    """map_batches arguments: a pool of `workers` actors (default: as many as
    the cluster's CPUs hold at `cpus_per_worker`; the inputs are a list made
    in the driver, so no Ray task waits for a CPU beside them). Ray Data
    restarts an actor that dies and retries its calls (its defaults:
    max_restarts=-1, max_task_retries=-1)."""
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
    # fercli's settings (the pixel limit, the precision) go to every worker, on any machine.
    settings = {key: value for key, value in os.environ.items() if key.startswith("FERCLI_")}
    return dict(compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
                runtime_env={"env_vars": settings} if settings else None)


def _dataset(ray, files: list[InputFile]):
    rows = [{"path": str(f.path), "relative": str(f.relative)} for f in files]
    return ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))


class RayEngine:
    """Where predict and video send their inputs with `--engine ray`: the
    Analyzer's options (each actor builds its own), the cluster and the pool."""

    def __init__(self, analyzer_options: dict, address: str | None = None, workers: int | None = None,
                 cpus_per_worker: float = 1.0):
        from fercli.modelfile import read_metadata, resolve_model_path

        require_ray()
        self.classes = list(read_metadata(resolve_model_path(analyzer_options.get("model")))["classes"])
        self.analyzer_options, self.address = analyzer_options, address
        self.workers, self.cpus_per_worker = workers, cpus_per_worker

    def _map(self, ray, files: list[InputFile], actor, batch_size: int, **constructor):
        return _dataset(ray, files).map_batches(
            actor, batch_size=batch_size, batch_format="numpy",
            fn_constructor_kwargs=dict(analyzer_options=self.analyzer_options, **constructor),
            **_actor_pool(ray, self.workers, self.cpus_per_worker))

    def analyze_images(self, files: list[InputFile], records, output: Path | None, landmarks: bool = False,
                       on_error=None, progress: bool = True) -> RunStats:
        """predict's work: every file's rows to `records` (in the order they
        finish), annotated copies under `output` when given."""
        import time

        from tqdm import tqdm

        stats, start = RunStats(), time.perf_counter()
        if not files:
            return stats   # all done already (--resume): no cluster to start
        inputs = {real_path(f.path) for f in files if not is_uri(str(f.path))}
        with ray_session(self.address) as ray:
            dataset = self._map(ray, files, AnalyzeImages, IMAGES_PER_BATCH, inputs=inputs, landmarks=landmarks,
                                output=str(output) if output else None)
            with tqdm(total=len(files), desc="images (ray)", unit="img", disable=not progress, file=sys.stderr) as bar:
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    for payload in batch["rows"]:
                        item, faces = pickle.loads(payload)
                        records.write(item, faces)
                        stats.items += 1
                        stats.analysed += item.error is None
                        stats.count(item, faces, on_error)
                        bar.update(1)
        stats.wall_s = time.perf_counter() - start
        return stats

    def analyze_videos(self, files: list[InputFile], records, output: Path, options, on_error=None,
                       progress: bool = True):
        """video's work, one video per actor call: each video's files under
        `output`, its rows to `records`. Returns ([(report, summary)], [(source, reason)])."""
        from tqdm import tqdm

        done, failed = [], []
        with ray_session(self.address) as ray:
            dataset = self._map(ray, files, AnalyzeVideos, 1, output=str(output),
                                inputs={real_path(f.path) for f in files}, options=options)
            with tqdm(total=len(files), desc="videos (ray)", unit="video", disable=not progress, file=sys.stderr) as bar:
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    for payload in batch["result"]:
                        rows, result, problems, warnings = pickle.loads(payload)
                        for item, faces in rows:
                            records.write(item, faces)
                        for source, why in warnings:
                            if on_error:
                                on_error(source, why)
                        failed += problems
                        if result is not None:
                            done.append(result)
                        bar.update(1)
        return done, failed
