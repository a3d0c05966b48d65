"""`fercli train`: fit a model on any data set `data.read_dataset` reads.

Data stay in memory as uint8; augmentation runs batched in Keras ops
(`augment.py`), so training also runs on Keras' JAX backend; every epoch writes
a resumable checkpoint, the history (CSV, and PNG with matplotlib) and, when
validation accuracy improves, the model with its metadata.

`--distributed`: data-parallel training over several processes (machines) with
Keras' own distribution API on the JAX backend (`keras.distribution.DataParallel`
over `jax.distributed`): each process computes its share of every batch, the
gradients are averaged across processes, the weights stay identical
everywhere. Process 0 writes --out; every process keeps a checkpoint of the
same weights (process i under <out>.process<i>/), to resume from its own disk.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fercli import __version__
from fercli.data import Dataset, read_dataset, stratified_folds, stratified_split
from fercli.errors import UserError
from fercli.sinks import write_text_atomically
from fercli.tf_quiet import load_keras

PREPROCESSING = "grayscale, resize to input_size x input_size (INTER_AREA when shrinking), raw 0-255 values; scaling is inside the model"


@dataclass
class TrainConfig:
    arch: str = "vgg"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    img_size: int = 48
    val_split: float = 0.1
    folds: int = 0
    seed: int = 0
    class_weight: str = "sqrt"
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    teacher: str | None = None
    distill_weight: float = 0.7
    ema: float = 0.0
    init: str | None = None
    photo: float = 0.0                      # share of each batch spoilt as photographs (augment.photo_degrade)
    add: tuple[str, ...] = ()               # more labelled data sets trained on beside DATA's train split


def class_weights(counts: np.ndarray, mode: str) -> np.ndarray:
    """Per-class loss weights, mean 1 over the training samples.
    sqrt: 1/sqrt(count) (a rare class counts more, without over-predicting it);
    balanced: 1/count; none: all ones."""
    counts = np.maximum(counts.astype(np.float64), 1)
    raw = {"none": np.ones_like(counts), "sqrt": 1 / np.sqrt(counts), "balanced": 1 / counts}[mode]
    return (raw * counts.sum() / (raw * counts).sum()).astype(np.float32)


def choose_splits(splits: dict[str, Dataset], cfg: TrainConfig) -> tuple[Dataset, Dataset | None, str]:
    """(train, val, description) from what the data set holds."""
    if "train" in splits:
        train = splits["train"]
        if "val" in splits:
            return train, splits["val"], "train split; val split for validation"
    else:
        train = splits.get("all") or next(iter(splits.values()))
    if cfg.val_split <= 0:
        return train, None, "all images for training, no validation"
    fit_index, val_index = stratified_split(train.labels, cfg.val_split, cfg.seed)
    return train.subset(fit_index), train.subset(val_index), f"stratified {cfg.val_split:.0%} held out for validation (seed {cfg.seed})"


@dataclass
class Processes:
    """This process's place in a data-parallel run (`start_processes`)."""
    index: int = 0
    count: int = 1

    @property
    def lead(self) -> bool:
        return self.index == 0


def start_processes(coordinator: str | None, count: int | None, index: int | None) -> Processes:
    """Join the other processes (jax.distributed through keras.distribution;
    None: Keras reads KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and
    _PROCESS_ID) and make every model data-parallel over all their devices."""
    if os.environ.get("KERAS_BACKEND") != "jax":
        raise UserError(f"--distributed trains on Keras' JAX backend; KERAS_BACKEND is {os.environ.get('KERAS_BACKEND')}.")
    keras = load_keras()
    import jax

    try:
        keras.distribution.initialize(coordinator, count, index)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise UserError(f"cannot join the training processes ({str(exc).splitlines()[0]}).") from None
    # Each process feeds its own share of every batch (_training_batches), not a tf.data pipeline to split.
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices(),
                                                                        auto_shard_dataset=False))
    return Processes(jax.process_index(), jax.process_count())


def _training_batches(train: Dataset, cfg: TrainConfig, weights: np.ndarray, teacher=None, first_epoch: int = 0,
                      processes: Processes = Processes()):
    """Augmented batches (images, targets, sample weights) in a fresh order each
    epoch (a resumed run goes on with the epoch it stopped at). With a teacher,
    targets mix the one-hot label with the teacher's probabilities on the same
    augmented batch (distillation). Over several processes, each gets its
    share of every batch (the same order everywhere) and the last partial
    batch is dropped, so all take the same number of steps."""
    keras = load_keras()

    from fercli.augment import augment_batch, photo_degrade

    one_hot = np.eye(len(train.classes), dtype=np.float32)
    teacher_lock = threading.Lock()

    class TrainingBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=2)  # two threads: the next batch is augmented while this one trains
            self.epoch = first_epoch
            self.order = self._shuffled()

        def _shuffled(self):
            return np.random.default_rng([cfg.seed, self.epoch]).permutation(len(train))

        def __len__(self):
            return steps_per_epoch(len(train), cfg.batch_size, processes)

        def __getitem__(self, index):
            chosen = self.order[index * cfg.batch_size:(index + 1) * cfg.batch_size][processes.index::processes.count]
            labels = train.labels[chosen]
            rng = np.random.default_rng([cfg.seed, self.epoch, index] + ([processes.index] if processes.count > 1 else []))
            images = keras.ops.convert_to_numpy(augment_batch(train.images[chosen], rng))
            target = one_hot[labels]
            if teacher is not None:
                with teacher_lock:  # one call at a time: Keras' JAX backend reuses the model's buffers
                    taught = teacher.predict_on_batch(images)  # compiled for the backend, returns NumPy
                target = (1 - cfg.distill_weight) * target + cfg.distill_weight * np.asarray(taught)
            if cfg.photo > 0:
                # After the teacher: it sees the face as augmented, the student the same face spoilt as a photograph.
                spoilt = photo_degrade(np.round(images[..., 0]).astype(np.uint8), rng, cfg.photo)
                images = spoilt[..., None].astype(np.float32)
            return images, target, weights[labels]

        def on_epoch_end(self):
            self.epoch += 1
            self.order = self._shuffled()

    return TrainingBatches()


def steps_per_epoch(images: int, batch_size: int, processes: Processes) -> int:
    return int(np.ceil(images / batch_size)) if processes.count == 1 else images // batch_size


def _compile(model, cfg: TrainConfig, steps_per_epoch: int):
    import keras

    total = max(cfg.epochs * steps_per_epoch, 1)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.lr * 0.1 if warmup else cfg.lr, decay_steps=total - warmup, alpha=0.01,
        warmup_target=cfg.lr if warmup else None, warmup_steps=warmup)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay,
                                         use_ema=cfg.ema > 0, ema_momentum=cfg.ema or 0.99),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
    )


def _progress_callback(epochs: int, steps: int, quiet: bool = False):
    import keras
    from tqdm import tqdm

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=True, dynamic_ncols=True,
                            disable=quiet)

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and batch % 10 == 0:
                self.bar.set_postfix(loss=f"{logs.get('loss', 0):.3f}", acc=f"{logs.get('accuracy', 0):.3f}")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            shown = {k: f"{v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
            self.bar.set_postfix(shown)
            self.bar.close()

    return Progress()


def write_history(history: dict[str, list[float]], stem: Path) -> None:
    from fercli.charts import history_plot

    keys = list(history)
    with open(f"{stem}.history.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for i in range(len(history[keys[0]]) if keys else 0):
            writer.writerow([i + 1, *(f"{history[k][i]:.6f}" for k in keys)])
    history_plot(history, f"{stem}.history.png")


def _checkpoint_callback(cfg, out: Path, ckpt_dir: Path, state: dict, metadata: dict, has_val: bool):
    import keras

    from fercli.modelfile import save_model

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            for key, value in logs.items():
                if key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                    state["history"].setdefault(key, []).append(float(value))
            state["history"].setdefault("lr", []).append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
            state["epoch"] = epoch + 1
            state["wall_s"] = state.get("wall_s", 0.0) + time.time() - state.pop("_epoch_start", time.time())
            score = float(logs.get("val_accuracy", 0.0)) if has_val else None
            if not has_val or score > state.get("best", -1.0):  # without validation data the last epoch is kept
                state["best"], state["best_epoch"] = score, epoch + 1
                meta = dict(metadata, epochs_trained=epoch + 1, best_epoch=epoch + 1, train_wall_s=round(state["wall_s"], 1),
                            val_accuracy=score)
                save_model(self.model, out, meta)
            self.model.save(ckpt_dir / "last.tmp.keras")
            os.replace(ckpt_dir / "last.tmp.keras", ckpt_dir / "last.keras")
            write_text_atomically(ckpt_dir / "state.json", json.dumps(state, indent=1))
            write_history(state["history"], out.with_suffix(""))

        def on_epoch_begin(self, epoch, logs=None):
            state["_epoch_start"] = time.time()

    return Checkpoint()


def _initial_model(train: Dataset, cfg: TrainConfig):
    """The --init model's network (uncompiled), checked against the data."""
    from fercli.modelfile import load_keras_model, read_metadata, resolve_model_path

    path = resolve_model_path(cfg.init, keras=True)
    start = read_metadata(path)
    if start["classes"] != train.classes or int(start["input_size"]) != cfg.img_size:
        raise UserError(f"--init {cfg.init} has classes {', '.join(start['classes'])} at {start['input_size']} px; "
                        f"the data has {', '.join(train.classes)} at {cfg.img_size} px.")
    if start.get("arch") == "ensemble":
        raise UserError(f"--init {cfg.init} is an ensemble; start from a single network (or distil it with --teacher).")
    return load_keras_model(path)


def train_one(train: Dataset, val: Dataset | None, cfg: TrainConfig, out: Path, resume: bool,
              split_note: str, echo=print, processes: Processes = Processes()) -> dict:
    """Train one model; returns the final state (history, best accuracy, epochs)."""
    keras = load_keras()
    from fercli.architectures import build_model
    from fercli.modelfile import read_metadata, resolve_model_path

    ckpt_dir = out.parent / f"{out.name}.ckpt"
    state_file = ckpt_dir / "state.json"
    steps = steps_per_epoch(len(train), cfg.batch_size, processes)
    weights = class_weights(train.counts(), cfg.class_weight)
    init = None
    if cfg.init:
        start = read_metadata(resolve_model_path(cfg.init, keras=True))
        cfg.arch = start.get("arch", cfg.arch)
        init = {"model": cfg.init, "val_accuracy": start.get("val_accuracy"), "epochs_trained": start.get("epochs_trained")}
    metadata = {
        "fercli_version": __version__, "classes": train.classes, "input_size": cfg.img_size, "channels": 1,
        "preprocessing": PREPROCESSING, "arch": cfg.arch, "data": train.source, "split": split_note,
        "train_images": len(train), "val_images": len(val) if val is not None else 0,
        "config": asdict(cfg), "class_weights": [round(float(w), 4) for w in weights],
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "init": init,
    }
    if resume and state_file.is_file() and (ckpt_dir / "last.keras").is_file():
        try:
            state = json.loads(state_file.read_text())
            state["epoch"], state["history"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"the checkpoint state {state_file} is damaged; drop --resume to start again.") from None
        if state.get("classes") != train.classes:
            raise UserError(f"the checkpoint in {ckpt_dir} was trained on other classes ({', '.join(state.get('classes', []))}).")
        model = keras.models.load_model(ckpt_dir / "last.keras")
        echo(f"resuming from {ckpt_dir} after epoch {state['epoch']}")
    else:
        if resume:
            echo(f"no checkpoint in {ckpt_dir}; starting from scratch")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        keras.utils.set_random_seed(cfg.seed)
        model = _initial_model(train, cfg) if cfg.init else build_model(cfg.arch, len(train.classes), cfg.img_size)
        _compile(model, cfg, steps)
        state = {"epoch": 0, "history": {}, "classes": train.classes, "config": asdict(cfg)}
    metadata["parameters"] = int(model.count_params())
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if state["epoch"] >= cfg.epochs:
        echo(f"{out}: all {cfg.epochs} epochs already done")
        if processes.lead:
            _calibrate_saved(out, val)
        return state
    teacher = None
    if cfg.teacher:
        from fercli.inference import default_precision, inference_copy
        from fercli.modelfile import load_keras_model

        teacher_path = resolve_model_path(cfg.teacher, keras=True)
        teacher_meta = read_metadata(teacher_path)
        if teacher_meta["classes"] != train.classes or int(teacher_meta["input_size"]) != cfg.img_size:
            raise UserError(f"teacher {cfg.teacher} has classes {', '.join(teacher_meta['classes'])} at {teacher_meta['input_size']} px; "
                            f"the data has {', '.join(train.classes)} at {cfg.img_size} px.")
        # bfloat16 where the CPU computes it natively: twice the teacher's speed, probabilities within ~2e-3
        precision = default_precision()
        teacher = inference_copy(load_keras_model(teacher_path), precision)
        metadata["teacher"] = {"model": str(teacher_path), "val_accuracy": teacher_meta.get("val_accuracy"),
                               "distill_weight": cfg.distill_weight, "precision": precision}
    validation = None if val is None else (val.images[..., None].astype(np.float32), np.eye(len(val.classes), dtype=np.float32)[val.labels])
    callbacks = [_progress_callback(cfg.epochs, steps, quiet=not processes.lead),
                 _checkpoint_callback(cfg, out, ckpt_dir, state, metadata, val is not None)]
    if cfg.ema:
        # Validation and the saved models use the moving average of the weights;
        # the swap back to the raw weights happens at the next epoch's start.
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        swap._ema_weights_in_model = state["epoch"] > 0  # a checkpoint holds the averaged weights
        callbacks.insert(0, swap)
    model.fit(_training_batches(train, cfg, weights, teacher, state["epoch"], processes), validation_data=validation, validation_batch_size=256,
              epochs=cfg.epochs, initial_epoch=state["epoch"], callbacks=callbacks, verbose=0)
    if processes.lead:
        _calibrate_saved(out, val)
    return state


def _calibrate_saved(out: Path, val: Dataset | None) -> None:
    """Fit the saved model's calibration on the validation split (fercli.calibration)
    and store it in the file; without validation images of two classes it stays uncalibrated."""
    from fercli.calibration import fitted_calibration
    from fercli.modelfile import load_keras_model, read_metadata, update_metadata

    if val is None or len(np.unique(val.labels)) < 2 or not out.is_file() or read_metadata(out).get("calibration"):
        return
    keras = load_keras()
    shared = keras.distribution.distribution()
    keras.distribution.set_distribution(None)   # this process alone, on its own devices (--distributed)
    try:
        raw = load_keras_model(out).predict(val.images[..., None].astype(np.float32), batch_size=256, verbose=0)
    finally:
        keras.distribution.set_distribution(shared)
    update_metadata(out, calibration=dict(fitted_calibration(np.asarray(raw), val.labels, val.source), split="val"))


def run_training(data_path: str, cfg: TrainConfig, out: Path, resume: bool, echo=print, warn=None,
                 processes: Processes | None = None) -> dict:
    """The whole `fercli train` job: single run, or k-fold cross-validation;
    with `processes` (start_processes), this process's part of a data-parallel run."""
    processes = processes or Processes()
    if processes.count > 1:
        if cfg.teacher or cfg.folds > 1:
            raise UserError("--distributed trains one model without a teacher; run --teacher and --folds on one process.")
        if cfg.batch_size % processes.count:
            raise UserError(f"--batch-size {cfg.batch_size} does not split evenly over {processes.count} processes.")
        if not processes.lead:
            # Every process runs the same steps (collectives must match) and keeps its own
            # checkpoint of the same weights, to resume from its own disk; process 0's is --out.
            out = out.parent / f"{out.name}.process{processes.index}" / out.name
            echo, warn = (lambda *_: None), None
    splits = read_dataset(data_path, cfg.img_size, warn=warn)
    present = sorted({ds.classes[label] for ds in splits.values() for label in np.unique(ds.labels)})
    if len(present) < 2:
        raise UserError(f"{data_path} holds images of {'only one class (' + present[0] + ')' if present else 'no class'}; "
                        "an emotion model needs at least two classes to tell apart.")
    skipped = sum(len(ds.skipped) for ds in splits.values())
    if skipped:
        echo(f"skipped {skipped} unreadable image(s); training goes on with the rest")
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.folds and cfg.folds > 1:
        return _cross_validate(splits, cfg, out, resume, echo)
    train, val, note = choose_splits(splits, cfg)
    if cfg.add:
        train, note = with_added_data(train, cfg, note, echo, warn)
    counts = ", ".join(f"{c} {n}" for c, n in zip(train.classes, train.counts()))
    echo(f"training on {len(train)} images ({counts}); validation: {len(val) if val is not None else 0} images ({note})")
    state = train_one(train, val, cfg, out, resume, note, echo, processes)
    return {"model": str(out), "best_val_accuracy": state.get("best"), "best_epoch": state.get("best_epoch"),
            "epochs": state["epoch"], "wall_s": state.get("wall_s"), "skipped": skipped}


def with_added_data(train: Dataset, cfg: TrainConfig, note: str, echo, warn) -> tuple[Dataset, str]:
    """The training split with every image of the --add data sets whose class
    the main data has (others left out, and said); validation stays DATA's."""
    parts, added = [train], []
    for path in cfg.add:
        for name, extra in read_dataset(path, cfg.img_size, warn=warn).items():
            kept, dropped = extra.within(train.classes)
            if len(dropped) == len(extra.classes):
                raise UserError(f"--add {path} has no class of the training data ({', '.join(train.classes)}).")
            parts.append(kept)
            added.append(f"{len(kept)} from {path}" + (f" ({name})" if name != "all" else "")
                         + (f", without {', '.join(dropped)}" if dropped else ""))
    echo("added to training: " + "; ".join(added))
    merged = Dataset(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                     list(train.classes), train.source + " + " + " + ".join(cfg.add))
    return merged, note + "; added to training: " + "; ".join(added)


def _cross_validate(splits: dict[str, Dataset], cfg: TrainConfig, out: Path, resume: bool, echo) -> dict:
    """Stratified k-fold over every non-test image; one model per fold."""
    parts = [ds for name, ds in splits.items() if name != "test"]
    everything = Dataset(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                         parts[0].classes, parts[0].source)
    folds = stratified_folds(everything.labels, cfg.folds, cfg.seed)
    fold_dir = out.parent / f"{out.stem}.folds"
    accuracies = []
    for i, held in enumerate(folds):
        train_index = np.setdiff1d(np.arange(len(everything)), held)
        note = f"fold {i + 1} of {cfg.folds} (stratified, seed {cfg.seed})"
        echo(f"fold {i + 1}/{cfg.folds}: {len(train_index)} train, {len(held)} validation images")
        state = train_one(everything.subset(train_index), everything.subset(held), cfg,
                          fold_dir / f"fold{i + 1}.keras", resume, note, echo)
        accuracies.append(state["best"])
    report = {"folds": cfg.folds, "accuracies": accuracies, "mean_accuracy": float(np.mean(accuracies)),
              "std_accuracy": float(np.std(accuracies)), "fold_models": str(fold_dir)}
    (out.parent / f"{out.stem}.folds.json").write_text(json.dumps(report, indent=2))
    return report
