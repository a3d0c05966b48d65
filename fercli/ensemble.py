"""Combining model files into one averaging model file (ensemble + test-time augmentation)."""
from __future__ import annotations

import os

from fercli.architectures import TTA_VIEWS, build_average, member_views
from fercli.errors import UserError
from fercli.inference import EmotionModel
from fercli.modelfile import WEIGHT_DTYPES, save_model

ENSEMBLE_SHARED_KEYS = ("classes", "input_size", "channels", "preprocessing", "data", "split", "train_images", "val_images")
ENSEMBLE_MEMBER_KEYS = ("arch", "parameters", "val_accuracy", "epochs_trained", "best_epoch", "train_wall_s", "config")


def make_ensemble(paths: list[str], out: str | os.PathLike, tta: str = "zoom-mirror", weights_dtype: str = "float32") -> "EmotionModel":
    """Average several models (same classes and input size), each on its
    test-time views under `tta` (architectures.member_views), into one model
    file (its weights stored as `weights_dtype`); returns it loaded."""
    from fercli import __version__

    members = [EmotionModel(p) for p in paths]
    first = members[0]
    for member in members[1:]:
        if member.classes != first.classes or member.input_size != first.input_size:
            raise UserError(f"{member.path} has other classes or input size than {first.path}; cannot ensemble them.")
    if tta not in TTA_VIEWS:
        raise UserError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTA_VIEWS)}.")
    if weights_dtype not in WEIGHT_DTYPES:
        raise UserError(f"unknown weights dtype {weights_dtype!r}; choose one of {', '.join(WEIGHT_DTYPES)}.")
    averaged = build_average([m.keras_model for m in members], first.input_size, tta=tta)
    # The data description is the ensemble's where every member shares it; training records stay with each member.
    shared = [key for key in ENSEMBLE_SHARED_KEYS if key in first.metadata
              and all(m.metadata.get(key) == first.metadata[key] for m in members)]
    metadata = {key: first.metadata[key] for key in shared}
    own_keys = [key for key in ENSEMBLE_SHARED_KEYS if key not in shared] + list(ENSEMBLE_MEMBER_KEYS)
    seen_by = member_views(tta, len(members))
    metadata.update(arch="ensemble", fercli_version=__version__, val_accuracy=None,
                    parameters=int(averaged.count_params()), weights_dtype=weights_dtype,
                    ensemble={"tta": list(dict.fromkeys(view for seen in seen_by for view in seen)), "members": [
                        {"model": str(m.path), "views": list(views), **{key: m.metadata.get(key) for key in own_keys}}
                        for m, views in zip(members, seen_by)]})
    save_model(averaged, out, metadata, weights_dtype)
    return EmotionModel(out)
