#!/usr/bin/env bash
# fercli train on Keras' JAX backend, on a GPU machine that has JAX but no Keras:
# a run of tens of epochs of the default network (vgg-flat) meant to end inside one
# 10-minute command; prints epochs per second and the validation accuracy reached.
#
#   here, with network:  benchmarks/accelerator_train.sh prepare DATA
#       packs DATA into .accel/data.npz (fercli pack) and downloads into .accel/wheels/
#       Keras and the small wheels fercli train needs that a bare JAX machine lacks.
#   there:               benchmarks/accelerator_train.sh [EPOCHS]          (default 50)
#       installs them (pip --no-index --find-links .accel/wheels) and trains on the pack.
#
# What travels: fercli/, this script and .accel/ (pack + wheels); the shipped models are not needed.
# Settings (environment): ARCH (vgg-flat), BATCH (128), LIMIT_S (540: the run stops there,
# its epochs so far reported), PYTHON (python3), RESULTS (a folder to copy the model and
# history to), and for prepare PY (3.12: the GPU machine's Python), WHEELS (the wheel list).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ACCEL=.accel

if [ "${1:-}" = prepare ]; then
    data=${2:?usage: $0 prepare DATA}
    rm -rf "$ACCEL/wheels" && mkdir -p "$ACCEL/wheels"    # one version of each wheel
    PYTHONPATH=$PWD "$PYTHON" -m fercli pack "$data" "$ACCEL/data.npz"
    # keras and what it needs beyond JAX's own numpy and ml_dtypes (optree is compiled; the rest
    # are pure Python), and what fercli train imports that JAX does not bring: click, tqdm.
    # A machine without h5py needs it too (WHEELS="... h5py"); OpenCV, matplotlib and
    # Pillow are too large to carry and must be there.
    wheels=${WHEELS:-keras namex optree typing-extensions absl-py rich markdown-it-py mdurl pygments packaging click tqdm}
    pinned=$("$PYTHON" - $wheels <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")    # the versions fercli was tested with here
    except PackageNotFoundError:
        print(name)
EOF
)
    platforms=$(for n in $(seq 17 39); do echo "--platform manylinux_2_${n}_x86_64"; done)
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "${PY:-3.12}" --implementation cp \
        $platforms --platform manylinux2014_x86_64 -d "$ACCEL/wheels" $pinned
    du -sh "$ACCEL/data.npz" "$ACCEL/wheels" fercli
    exit 0
fi

epochs=${1:-50}
[ -f "$ACCEL/data.npz" ] || { echo "no $ACCEL/data.npz here: run '$0 prepare DATA' first, where the data is." >&2; exit 2; }
"$PYTHON" -m pip install -q --no-index --find-links "$ACCEL/wheels" keras click tqdm
export KERAS_BACKEND=jax PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TQDM_MININTERVAL=60   # a progress line a minute
"$PYTHON" -c "import jax, keras; print(f'keras {keras.__version__} on jax {jax.__version__}:', *jax.devices())"
run=$ACCEL/run
rm -rf "$run" && mkdir -p "$run"
start=$(date +%s.%N)
status=0
timeout "${LIMIT_S:-540}" "$PYTHON" -m fercli train "$ACCEL/data.npz" --arch "${ARCH:-vgg-flat}" --epochs "$epochs" \
    --batch-size "${BATCH:-128}" --out "$run/model.keras" || status=$?
echo >&2   # after a progress bar cut off mid-line
"$PYTHON" - "$run" "$start" "$(date +%s.%N)" "$epochs" "$status" <<'EOF'
import csv, json, sys
from pathlib import Path
run, start, end, asked, status = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
state_file = run / "model.keras.ckpt" / "state.json"
if not state_file.is_file():
    sys.exit(f"no epoch finished (exit status {status}); see the output above.")
state = json.loads(state_file.read_text())
rows = list(csv.DictReader(open(run / "model.history.csv")))
done, wall = state["epoch"], state["wall_s"]
print(f"{done} of {asked} epochs in {wall:.0f} s of training: {done / wall:.3f} epochs/s, {wall / done:.1f} s an epoch "
      f"(the first epoch's compilation included; {end - start:.0f} s for the whole command)"
      + ("" if status == 0 else f"; stopped, exit status {status}"))
if "val_accuracy" in rows[0]:
    best = max(rows, key=lambda row: float(row["val_accuracy"]))
    print(f"val accuracy: best {float(best['val_accuracy']):.2%} at epoch {best['epoch']}, last {float(rows[-1]['val_accuracy']):.2%}")
else:
    print("no validation split in the pack: no val accuracy")
EOF
if [ -n "${RESULTS:-}" ]; then
    mkdir -p "$RESULTS" && cp "$run"/model.keras "$run"/model.history.* "$RESULTS"/ 2>/dev/null || true
fi
exit "$status"
