"""The `fercli` command. Each command parses options and calls one module;
TensorFlow is imported only inside the commands that need it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from fercli import __version__
from fercli.errors import UserError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXIT_CODES = "Exit codes: 0 success, 1 some inputs failed, 2 usage error (bad option, nothing to read, missing or corrupt model)."


def warn(path: str, reason: str) -> None:
    click.echo(f"warning: {path}: {reason}", err=True)


def note_without_charts() -> None:
    """Once per command that draws charts: where matplotlib is missing, only their CSV data was written."""
    from fercli.charts import NO_CHARTS, charts_available

    if not charts_available():
        click.echo(NO_CHARTS, err=True)


class FercliGroup(click.Group):
    """Turns UserError into one clear sentence and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:  # a file or folder the command needs and the system refuses
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            click.echo(f"error: {where}{exc.strerror or exc}.", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted.", err=True)
            sys.exit(130)


@click.group(cls=FercliGroup, epilog=EXIT_CODES)
@click.version_option(__version__, "--version", prog_name="fercli")
@click.option("--max-pixels", type=click.FloatRange(1e4), default=None,
              help="Refuse pictures larger than this many pixels, read from their header before decoding [default: 100e6, or $FERCLI_MAX_PIXELS].")
def main(max_pixels):
    """Find faces in images and videos, tell which emotion each shows, and
    train and evaluate emotion models."""
    if max_pixels:
        os.environ["FERCLI_MAX_PIXELS"] = str(int(max_pixels))  # before fercli.data sets OpenCV's own limit from it


@main.command(epilog=EXIT_CODES)
@click.argument("data", type=click.Path())
@click.option("--arch", default="vgg", show_default=True, help="Network architecture: vgg, vgg-small, vgg-wide (global average pooling head), vgg-flat, vgg-small-flat, vgg-wide-flat (flatten head: keeps feature positions).")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=2e-3, show_default=True, type=click.FloatRange(0, min_open=True), help="Peak learning rate (AdamW, warm-up then cosine decay).")
@click.option("--weight-decay", default=0.05, show_default=True, type=click.FloatRange(0))
@click.option("--img-size", default=48, show_default=True, type=click.IntRange(16, 256), help="Face crops are resized to this square size.")
@click.option("--val-split", default=0.1, show_default=True, type=click.FloatRange(0, 0.9), help="Stratified fraction held out when DATA has no val split.")
@click.option("--folds", default=0, type=click.IntRange(0), help="K-fold cross-validation: train K models, report mean and std accuracy.")
@click.option("--class-weight", type=click.Choice(["sqrt", "balanced", "none"]), default="sqrt", show_default=True,
              help="Loss weight per class against imbalance: 1/sqrt(count), 1/count, or none.")
@click.option("--label-smoothing", default=0.1, show_default=True, type=click.FloatRange(0, 0.5))
@click.option("--teacher", default=None, help="Distil from this model (shipped name or file, e.g. an ensemble): targets mix labels with its probabilities.")
@click.option("--distill-weight", default=0.7, show_default=True, type=click.FloatRange(0, 1), help="Share of the teacher's probabilities in the targets.")
@click.option("--ema", default=0.0, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Keep an exponential moving average of the weights with this momentum (e.g. 0.999); validate and save it. 0: off.")
@click.option("--init", default=None, help="Start from this model's weights (shipped name or file) with a fresh schedule: fine-tuning or a warm restart; its architecture replaces --arch.")
@click.option("--photo", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of each batch spoilt as photographs spoil faces (seen small and enlarged, blur, noise, JPEG, lighting); "
                   "with --teacher, the teacher sees the unspoilt face.")
@click.option("--add", multiple=True, type=click.Path(), help="More labelled data trained on beside DATA (e.g. CK+; classes DATA lacks are "
              "left out); validation stays DATA's. Repeatable.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out", default="models/model.keras", show_default=True, type=click.Path(dir_okay=False), help="Where to write the model.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint next to --out (after a kill).")
@click.option("--distributed", is_flag=True, help="Data-parallel training over several processes or machines (Keras' "
              "distribution API on the JAX backend); start one process per machine with the same command. docs/cluster.md.")
@click.option("--coordinator", default=None, help="--distributed: HOST:PORT of process 0 [default: $KERAS_DISTRIBUTION_JOB_ADDRESSES].")
@click.option("--num-processes", type=click.IntRange(1), default=None, help="--distributed: how many processes [default: $KERAS_DISTRIBUTION_NUM_PROCESSES].")
@click.option("--process-id", type=click.IntRange(0), default=None, help="--distributed: this process's number, 0 writes the model [default: $KERAS_DISTRIBUTION_PROCESS_ID].")
def train(data, out, resume, distributed, coordinator, num_processes, process_id, **options):
    """Train an emotion model on DATA (class folders, DATA/{train,val}/<class>/, fer2013.csv, or a pack from `fercli pack`).

    \b
    Examples:
      fercli train ../shared/data/fer2013 --epochs 30 --out models/mine.keras
      fercli train DATA --distributed --coordinator 10.0.0.1:7777 --num-processes 2 --process-id 0   (and 1 on the other machine)
    """
    from fercli.tf_quiet import require_keras_backend

    require_keras_backend("fercli train", jax=distributed)   # before the data is read
    processes = None
    if distributed:
        os.environ.setdefault("KERAS_BACKEND", "jax")   # before Keras loads; start_processes refuses another backend
        from fercli.train import start_processes

        processes = start_processes(coordinator, num_processes, process_id)
    from fercli.charts import charts_available
    from fercli.train import TrainConfig, run_training

    cfg = TrainConfig(**options)
    result = run_training(data, cfg, Path(out), resume, echo=click.echo, warn=warn, processes=processes)
    if processes and not processes.lead:
        sys.exit(0)
    out_path = Path(out)
    if "mean_accuracy" in result:
        click.echo(f"{cfg.folds}-fold cross-validation: accuracy {result['mean_accuracy']:.2%} "
                   f"± {result['std_accuracy']:.2%} (folds: {', '.join(f'{a:.2%}' for a in result['accuracies'])}); "
                   f"fold models in {result['fold_models']}")
    else:
        best = result["best_val_accuracy"]
        click.echo(f"saved {out_path}" + (f" (val accuracy {best:.2%}, epoch {result['best_epoch']})" if best is not None
                                          else " (no validation data: the last epoch)")
                   + f"; history in {out_path.with_suffix('')}.history.csv" + ("/.png" if charts_available() else ""))
    note_without_charts()
    skipped_and_exit(result.get("skipped", 0))


@main.command("eval", epilog=EXIT_CODES)
@click.argument("data", type=click.Path())
@click.option("--model", "model_name", default=None, help="Model file or shipped model name (default: the shipped default model).")
@click.option("--split", default=None, help="Which split to score (fer2013.csv: PrivateTest by default, else PublicTest).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the scores as JSON here.")
@click.option("-o", "--output", default="output", show_default=True, type=click.Path(file_okay=False), help="Folder for the confusion matrix and reliability diagram (CSV, and PNG with matplotlib).")
@click.option("--predictions", "predictions_path", type=click.Path(), default=None,
              help="Write one CSV row per image here: source,label,predicted,confidence,p_<class>...")
@click.option("--record", is_flag=True, help="Store the accuracy in the model file (per inference precision), for `fercli models`.")
def eval_command(data, model_name, split, json_path, output, predictions_path, record):
    """Score a model on labelled DATA: accuracy, per-class table, confusion
    matrix, and how well its probabilities are calibrated (ECE, NLL, Brier,
    accuracy of the most confident faces, reliability diagram).

    \b
    Example:  fercli eval ../shared/data/fer2013/val --json r.json --predictions p.csv
    """
    from fercli.charts import load_in_background
    from fercli.evaluate import evaluate, write_json, write_reports
    from fercli.report import show_scores

    load_in_background()   # matplotlib for the charts, while the crops are read
    result, model = evaluate(data, model_name, split, warn=warn, predictions=predictions_path)
    show_scores(result, model.name)
    written = write_reports(result, Path(output), f"eval_{model.name}")
    if predictions_path:
        written.append(Path(predictions_path))
    if json_path:
        write_json(result, Path(json_path))
        written.append(Path(json_path))
    if record:
        from fercli.modelfile import record_accuracy

        record_accuracy(model.path, result, model.precision)
        written.append(model.path)
    click.echo("wrote " + ", ".join(str(p) for p in written))
    note_without_charts()
    skipped_and_exit(result.get("skipped", 0))


@main.command(epilog=EXIT_CODES)
@click.argument("data", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=False))
def pack(data, out):
    """Pack a data set into one file that train and eval read as they read it.

    DATA: class folders, DATA/{train,val,test}/<class>/, or fer2013.csv. OUT
    reads back with the same splits, classes, labels, images and sources. Each
    image keeps its file's bytes (a CSV row: a lossless PNG); unreadable
    images are left out, named. For moving training data to another machine
    (an accelerator) in one piece; it loads in seconds.

    \b
    Example:  fercli pack ../shared/data/fer2013 fer2013.npz
              fercli train fer2013.npz --epochs 30 --out models/mine.keras
    """
    from fercli.pack import write_pack

    result = write_pack(data, out, warn=warn)
    splits = ", ".join(f"{name} {n:,}" for name, n in result["splits"].items())
    click.echo(f"packed {sum(result['splits'].values()):,} images ({splits}; {len(result['classes'])} classes) into {out}: "
               f"{result['pack_bytes'] / 1e6:.1f} MB (the images' encoded bytes: {result['encoded_bytes'] / 1e6:.1f} MB)")
    skipped_and_exit(result["skipped"])


def skipped_and_exit(skipped: int) -> None:
    """Exit code 1, and a line saying why, when unreadable images were left out."""
    if skipped:
        click.echo(f"{skipped} unreadable image(s) were skipped (named above).", err=True)
    sys.exit(1 if skipped else 0)


# The detector names repeat fercli.detect.DETECTORS so that --help need not import it (a test keeps them equal).
DETECTOR_NAMES = ["centerface", "haar"]
# Repeats fercli.quality.DEFAULT_MIN_QUALITY so that --help need not import it (a test keeps them equal).
DEFAULT_MIN_QUALITY = 0.1


def detector_options(command):
    """The face detector options shared by predict, explain, video and serve."""
    options = [
        click.option("--detector", type=click.Choice(DETECTOR_NAMES), default="centerface", show_default=True,
                     help="Face detector: centerface (CNN: small, tilted, dim, blurred faces; score and landmarks) "
                          "or haar (OpenCV's cascade; no score, no landmarks). `fercli detectors` lists them."),
        click.option("--min-face", default=None, type=click.IntRange(8), help="Smallest face side in pixels [default: centerface 24, or 1/30 of the picture's shorter side where that is more; haar 30]."),
        click.option("--min-score", default=0.25, show_default=True, type=click.FloatRange(0, 1), help="centerface: drop faces the detector scores lower."),
        click.option("--no-align", is_flag=True, help="Classify each face as boxed instead of turned upright by its eye line."),
        click.option("--min-confidence", default=0.0, show_default=True, type=click.FloatRange(0, 1),
                     help="Faces whose top probability (calibrated) is under this get the emotion `uncertain`; their probabilities stay in the row."),
        click.option("--min-quality", default=DEFAULT_MIN_QUALITY, show_default=True, type=click.FloatRange(0, 1),
                     help="Faces whose quality (0-1: how likely the emotion is right, from confidence, size, sharpness, pose and detector score) "
                          "is under this get the emotion `uncertain` too."),
        click.option("--cascade", type=click.Path(dir_okay=False), default=None, help="haar: cascade XML (default: the shipped frontal-face cascade)."),
        click.option("--scale-factor", default=1.1, show_default=True, type=click.FloatRange(1.0, min_open=True), help="haar: cascade pyramid step."),
        click.option("--min-neighbors", default=5, show_default=True, type=click.IntRange(0), help="haar: higher gives fewer, surer faces."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def engine_options(command):
    """Where predict and video run: this process, or a Ray cluster."""
    options = [
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help='local: this process; ray: a pool of Ray actors, each with its own model and detector '
                          '(needs pip install "fercli[ray]"; docs/cluster.md).'),
        click.option("--address", default=None, help="ray: the cluster to use (auto, or ray://HOST:10001) "
                                                     "[default: a local Ray instance for this command only]."),
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="ray: actors in the pool [default: the cluster's CPUs / --cpus-per-worker]."),
        click.option("--cpus-per-worker", type=click.FloatRange(0.1), default=1.0, show_default=True,
                     help="ray: CPUs reserved for each actor."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def make_analyzer(model_name, detector, min_face, no_align, engine="local", address=None, workers=None,
                  cpus_per_worker=1.0, stills=False, side_by_side=False, **options):
    """The Analyzer, or for --engine ray the engine that builds one per Ray actor
    from the same options. `stills` (photos, not video): the networks take every
    CPU; `side_by_side` (a folder, not one request at a time): as one image per
    CPU detected at once, on one thread each."""
    if min_face is not None:
        options["min_face"] = min_face
    arguments = dict(model=model_name, detector=detector, align=not no_align, **options)
    if engine == "ray":
        from fercli.cluster import RayEngine

        return RayEngine(arguments, address, workers, cpus_per_worker)
    from fercli.pipeline import Analyzer
    from fercli.resources import cpu_threads

    if stills:
        return Analyzer(threads=cpu_threads(), detect_workers=cpu_threads() if side_by_side else 1, **arguments)
    return Analyzer(**arguments)


def image_input_options(command):
    """Options shared by predict and explain."""
    options = [
        click.argument("paths", nargs=-1, metavar="[PATH]..."),
        click.option("-p", "--path", "path", multiple=True, help="Image file, folder, glob, or - for paths on standard input; "
                     "repeatable, and the same as PATH arguments (default: data/test/ under the current folder)."),
        click.option("-r", "--recursive", is_flag=True, help="Also read subfolders."),
        click.option("-o", "--output", default="output", show_default=True, type=click.Path(file_okay=False), help="Folder for annotated copies and predictions.csv."),
        click.option("--model", "model_name", default=None, help="Model file or shipped model name (default: the shipped default model)."),
        click.option("--class", "explain_class", default=None, help="Explain this class instead of the predicted one (with --explain / explain)."),
        click.option("--jsonl", is_flag=True, help="Also write predictions.jsonl (same records as the CSV)."),
        click.option("--resume", is_flag=True, help="Skip inputs already in the output CSV and append the rest."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
        click.option("--landmarks", is_flag=True, help="Also draw the five landmarks of each face (eyes, nose, mouth corners)."),
    ]
    command = detector_options(command)  # listed after the input options in --help
    for option in reversed(options):
        command = option(command)
    return command


@main.command(epilog=EXIT_CODES)
@image_input_options
@click.option("--no-images", is_flag=True, help="Write only the CSV, no annotated copies.")
@click.option("--explain", is_flag=True, help="Also write a class activation map per face (<image>.face<N>.cam.png).")
@click.option("--parquet", is_flag=True, help="Also write predictions.parquet (the CSV's records; needs PyArrow).")
@engine_options
def predict(**options):
    """Find faces in images and tell their emotions.

    Writes an annotated copy of each image (box, emotion, confidence) under
    OUTPUT at the same relative path, and OUTPUT/predictions.csv with one row
    per face (status=ok), per image without a face (no_face) or per image that
    failed (error: reason).

    PATH (or -p, repeatable): image files, folders, globs, or - for paths on
    standard input, as many as given; a file given twice is read once.

    \b
    Examples:
      fercli predict photo.jpg
      fercli predict photos/*.jpg -o out
      fercli predict -p photos/ -p more/ -r -o results --jsonl
      fercli predict "shots/*.png" --no-images
      fercli predict                  (reads data/test/)
      fercli predict -p s3://bucket/photos -r --engine ray --address auto --no-images --parquet
    """
    predict_images(**options)


@main.command(epilog=EXIT_CODES)
@image_input_options
def explain(**options):
    """Show which parts of each face drove its prediction: a Grad-CAM heat map
    on the last convolutional layer, per face, for the predicted class or
    --class. Writes <image>.face<N>.cam.png beside each annotated copy, and the
    CSV as predict does.

    \b
    Examples:
      fercli explain photo.jpg -o explained
      fercli explain photos/*.jpg --class happy
    """
    predict_images(explain=True, no_images=False, **options)


def predict_images(paths, path, recursive, output, model_name, no_images, jsonl, resume, quiet, explain, explain_class, landmarks,
                   parquet=False, **detector):
    from fercli.data import canonical_class
    from fercli.predict import run_predict
    from fercli.report import show_predict_summary
    from fercli.sinks import require_pyarrow
    from fercli.sources import collect_images

    out = Path(output)
    if detector.get("engine") == "ray" and (explain or explain_class):
        raise UserError("--explain runs on the local engine only (it needs the model's gradients); drop --engine ray.")
    if parquet:
        require_pyarrow("--parquet")
    if explain or explain_class:
        from fercli.tf_quiet import require_tensorflow

        require_tensorflow("explaining a prediction (Grad-CAM)")
    given = list(paths) + list(path)   # PATH arguments (what a shell makes of photos/*.jpg) and -p, as many as given
    uri = next((p for p in given if "://" in p), None)
    if uri:
        from fercli.cluster import collect_uri_images

        if detector.get("engine") != "ray":
            raise UserError(f"{uri} is a URI: object storage is read by the Ray engine (add --engine ray).")
        if len(set(given)) > 1:
            raise UserError(f"{uri} is a URI: object storage is read one URI a run, without other paths.")
        inputs, not_images = collect_uri_images(uri, recursive)
    else:
        inputs, not_images = collect_images(given, recursive, out)
    analyzer = make_analyzer(model_name, stills=True, side_by_side=True, **detector)
    explainer = None
    if explain or explain_class:
        from fercli.explain import Explainer

        explainer = Explainer(analyzer.model)
        if explain_class is not None:
            explain_class = canonical_class(explain_class)
            if explain_class not in analyzer.classes:
                raise UserError(f"--class {explain_class!r} is not one of the model's classes ({', '.join(analyzer.classes)}).")
    summary = run_predict(inputs, analyzer, out, save_images=not no_images, jsonl=jsonl, resume=resume,
                          not_images=not_images, progress=not quiet, on_error=warn, explainer=explainer,
                          explain_class=explain_class, draw_landmarks=landmarks, parquet=parquet)
    show_predict_summary(summary, out)
    sys.exit(1 if summary.failed else 0)


@main.command(epilog=EXIT_CODES)
@click.argument("videos", nargs=-1)
@click.option("--camera", type=int, default=None, help="Live camera device number instead of files.")
@click.option("--show", is_flag=True, help="Show the annotated frames in a window (needs a display, and opencv-python in place of opencv-python-headless).")
@click.option("-o", "--output", default="output", show_default=True, type=click.Path(file_okay=False), help="Folder for annotated videos, predictions.csv, timelines and summaries.")
@click.option("--model", "model_name", default=None, help="Model file or shipped model name (default: the shipped default model).")
@detector_options
@click.option("--every", default=3, show_default=True, type=click.IntRange(1), help="Detect and classify every Nth frame; frames between carry the last result.")
@click.option("--detect-scale", type=click.FloatRange(0.05, 2.0), default=None, help="Detect faces on the frame scaled by this factor (smaller is faster but misses small faces) [default: centerface at most 960 px on the long side, haar 0.5].")
@click.option("--smooth", default=3, show_default=True, type=click.IntRange(1), help="Average each track's probabilities over its last N analysed frames (1 = off).")
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Stop a camera run after this many frames (default: until q or Ctrl-C).")
@click.option("--no-video", is_flag=True, help="Write only the CSV and summaries, no annotated video.")
@click.option("--jsonl", is_flag=True, help="Also write predictions.jsonl.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--landmarks", is_flag=True, help="Also draw the five landmarks of each face.")
# The choices repeat fercli.videoio.CODECS so that --help need not import PyAV (a test keeps them equal).
@click.option("--codec", type=click.Choice(["h264", "hevc", "mpeg4", "mjpeg"]), default="h264", show_default=True,
              help="Codec of the annotated video: h264, hevc, mpeg4 (.mp4) or mjpeg (.avi).")
@engine_options
def video(videos, camera, show, output, model_name, every, detect_scale, smooth, max_frames, no_video, jsonl, quiet,
          landmarks, codec, **detector):
    """Annotate video files (or a live camera) frame by frame.

    Writes OUTPUT/<name>.mp4 (H.264 that browsers play, every frame at its own
    time, the input's audio kept; an input's folders are mirrored under
    OUTPUT), OUTPUT/predictions.csv with one row per face per frame (frame,
    time_s: the frame's real time, track), and per video a timeline plot
    (<name>.timeline.png, with matplotlib; its data in <name>.timeline.csv)
    and a summary of the time each face spends in each emotion
    (<name>.summary.json).

    \b
    Examples:
      fercli video clip.mp4
      fercli video clips/ -o annotated --every 1
      fercli video a.mp4 "clips/*.mov"     (files, folders and globs; each file once)
      fercli video --camera 0 --show
      fercli video clips/ --engine ray --address auto   (one video per Ray task)
    """
    from fercli.report import show_video_summary
    from fercli.sources import collect_videos
    from fercli.video import VideoOptions, detection_scaling, preview_unavailable, run_camera, run_videos

    if detector["engine"] == "ray" and (camera is not None or show):
        raise UserError("--engine ray runs video files; the camera and --show run on the local engine.")
    reason = preview_unavailable() if show else None
    if reason:
        click.echo(f"note: {reason}; writing files only.", err=True)
        show = False
    files = collect_videos(videos) if camera is None else []
    out = Path(output)
    analyzer = make_analyzer(model_name, **detection_scaling(detector["detector"], detect_scale), **detector)
    options = VideoOptions(every=every, smooth=smooth, show=show, save_video=not no_video, jsonl=jsonl,
                           draw_landmarks=landmarks, codec=codec, max_frames=max_frames, progress=not quiet)
    if camera is not None:
        report, summary = run_camera(camera, analyzer, out, options, on_error=warn)
        show_video_summary([(report, summary)], out)
        note_without_charts()
        sys.exit(0)
    done, failed = run_videos(files, analyzer, out, options, on_error=warn)
    show_video_summary(done, out)
    if done:
        note_without_charts()
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the combined model.")
# The choices repeat fercli.architectures' TTA_VIEWS and fercli.modelfile's WEIGHT_DTYPES so that --help need not import them (a test keeps them equal).
@click.option("--tta", type=click.Choice(["none", "flip", "zoom-mirror", "flip-zoom", "crossed"]), default="zoom-mirror", show_default=True,
              help="Test-time views each model sees: the image only; + its mirror image; + the mirror image with the "
                   "centre enlarged 1.1x; all four of the image and its mirror image, plain and enlarged; crossed: "
                   "one view each in turn (the image, the enlarged mirror image, the mirror image, the enlarged image).")
@click.option("--weights-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="How the file stores the weights: float16 halves its size (probabilities move by under 1e-3).")
@click.option("--val", "val_data", default=None, type=click.Path(), help="Labelled data to measure (and record) the ensemble's accuracy on, e.g. fer2013/val.")
def ensemble(models, out, tta, weights_dtype, val_data):
    """Combine models (and test-time augmentation) into one model file that
    averages their probabilities; usable with --model everywhere.

    \b
    Example:  fercli ensemble a.keras b.keras --out models/accurate.keras --val ../shared/data/fer2013/val
    """
    from fercli.tf_quiet import require_tensorflow

    require_tensorflow("fercli ensemble")
    from fercli.evaluate import evaluate
    from fercli.ensemble import make_ensemble
    from fercli.modelfile import record_accuracy

    model = make_ensemble(list(models), out, tta=tta, weights_dtype=weights_dtype)
    seen = "; ".join(f"{Path(m['model']).name}: {', '.join(m['views'])}" for m in model.metadata["ensemble"]["members"])
    click.echo(f"saved {out}: {len(models)} model(s) ({seen}), {model.metadata['parameters']:,} parameters")
    if val_data:
        from fercli.export import calibrate_model_file

        entry, _ = calibrate_model_file(out, val_data, warn=warn)
        result, model = evaluate(val_data, out, warn=warn)
        record_accuracy(out, result, model.precision)
        click.echo(f"accuracy on {result['data']}: {result['accuracy']:.2%} (n={result['n']}); calibrated there: "
                   f"expected calibration error {entry['ece_before']:.2%} -> {entry['ece_after']:.2%}")


@main.command("export")
@click.argument("model")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Where to write the .lite file [default: beside MODEL, NAME.lite].")
@click.option("--calibration", "calibration_data", default=None, type=click.Path(),
              help="Labelled or unlabelled face crops whose activation ranges the int8 network is quantized with "
                   "[default: the model's training data, where it still is; else --val].")
@click.option("--val", "val_data", default=None, type=click.Path(), help="Labelled data to measure (and record) each precision's accuracy on, e.g. fer2013/val.")
@click.option("--no-int8", is_flag=True, help="Write the float32 network only: a smaller file, slower on the CPU.")
def export(model, out, calibration_data, val_data, no_int8):
    """Export a Keras model (a .keras file, or a shipped name) for the lean
    runtime: one .lite file with a float32 and an int8 ONNX network, which
    predict, video, serve and eval run on ONNX Runtime without TensorFlow
    (--model FILE.lite), and the Keras architecture, so the file is the
    model's one copy. With --val, it says where int8 measures more than 0.3
    point below float32. Needs TensorFlow (pip install "fercli[train]").

    \b
    Example:  fercli export models/mine.keras --val ../shared/data/fer2013/val
    """
    from fercli.data import read_dataset
    from fercli.evaluate import evaluate
    from fercli.export import INT8_TOLERANCE, calibration_sample, export_lite
    from fercli.lite import LITE_PRECISIONS, LITE_SUFFIX, read_lite_metadata
    from fercli.modelfile import read_metadata, record_accuracy, resolve_model_path
    from fercli.tf_quiet import require_tensorflow

    require_tensorflow("fercli export")
    source = resolve_model_path(model, keras=True)
    target = Path(out) if out else source.with_name(source.stem + LITE_SUFFIX)
    if not target.name.endswith(LITE_SUFFIX):
        raise UserError(f"--out {target} must end in {LITE_SUFFIX}.")
    if target.resolve() == source.resolve():
        raise UserError(f"exporting would overwrite {source}, the model it reads: give --out NEW.lite.")
    metadata = read_metadata(source)
    trained_on = str(metadata.get("data", "")).split(" + ")[0]
    calibration_data = calibration_data or (trained_on if trained_on and Path(trained_on).exists() else val_data)
    images = None
    if calibration_data and not no_int8:
        splits = read_dataset(calibration_data, int(metadata["input_size"]), warn=warn)
        images = calibration_sample(splits.get("train", next(iter(splits.values()))).images)
    export_lite(source, target, images, calibration_data or "", without_int8="left out (fercli export --no-int8)" if no_int8 else None)
    precisions = read_lite_metadata(target)["precisions"]
    click.echo(f"saved {target} ({target.stat().st_size / 1e6:.1f} MB: {' and '.join(reversed(precisions))} networks)"
               + ("" if images is not None or no_int8 else "; int8 needs face crops to set its ranges: give --calibration DATA"))
    accuracy = {}
    for precision in [p for p in reversed(LITE_PRECISIONS) if p in precisions] if val_data else ():
        result, _ = evaluate(val_data, str(target), warn=warn, precision=precision)
        record_accuracy(target, result, precision)
        accuracy[precision] = result["accuracy"]
        click.echo(f"{precision}: accuracy {result['accuracy']:.2%} on {result['data']} (n={result['n']}), recorded")
    if "int8" in accuracy and accuracy["int8"] < accuracy["float32"] - INT8_TOLERANCE:
        warn(str(target), f"int8 measured more than {INT8_TOLERANCE:.1%} below float32 on {val_data}; where that holds on a "
                          "large validation set, `fercli export --no-int8` writes float32 only")


@main.command("calibrate")
@click.argument("model")
@click.option("--val", "val_data", required=True, type=click.Path(), help="Labelled data to fit on: its val split, else all of it (e.g. fer2013/val).")
@click.option("--split", default=None, help="Fit on this split of --val instead.")
def calibrate_command(model, val_data, split):
    """Make a model's confidence a probability: fit its calibration (a linear
    map of the log-probabilities, by likelihood) on labelled data and store it
    in the model file, and in the .keras or .lite file beside it that it was
    exported from or to. `fercli train` and `fercli ensemble --val` do this
    themselves.

    \b
    Example:  fercli calibrate models/mine.keras --val ../shared/data/fer2013/val
    """
    from fercli.export import calibrate_model_file

    entry, written = calibrate_model_file(model, val_data, split, warn=warn)
    click.echo(f"calibrated on {entry['data']} (n={entry['n']}): expected calibration error "
               f"{entry['ece_before']:.2%} -> {entry['ece_after']:.2%}, negative log-likelihood "
               f"{entry['nll_before']:.3f} -> {entry['nll_after']:.3f}; wrote {', '.join(str(p) for p in written)}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (127.0.0.1: this machine only).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--model", "model_name", default=None, help="Model file or shipped model name (default: the shipped default model).")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=click.FloatRange(0.1), help="Larger uploads get HTTP 413.")
@detector_options
def serve(host, port, model_name, max_upload_mb, **detector):
    """A local web page to drop images on, and a JSON API (needs the serve extra: pip install "fercli[serve]").

    \b
    POST /api/predict (multipart form, field "file"; ?annotate=1, ?explain=1, ?min_confidence=P, ?min_quality=Q)
    returns the same records as predictions.csv / .jsonl.
    Example:  fercli serve --port 8000, then open http://127.0.0.1:8000/
    """
    from fercli.serve import require_flask, serve as run_server

    require_flask()  # before the model loads
    run_server(make_analyzer(model_name, stills=True, **detector), host, port, max_upload_mb)


@main.command("models")
@click.option("--no-measure", is_flag=True, help="Skip measuring crops/s.")
def models_command(no_measure):
    """List the shipped models: classes, validation accuracy, classifier crops/s
    measured now (batch 64).

    \b
    Example:  fercli models
    """
    from fercli.report import show_models

    show_models(measure=not no_measure)


@main.command("detectors")
def detectors_command():
    """List the face detectors (use with --detector NAME): file, size, licence, source.

    \b
    Example:  fercli detectors
    """
    from fercli.report import show_detectors

    show_detectors()


if __name__ == "__main__":
    main()
