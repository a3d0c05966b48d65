"""What every fercli model file carries, whichever runtime reads it: the
`fercli.json` member with the class names, the input size and how the model
was made, and the check that it holds what running the model needs."""
from fercli.errors import UserError

METADATA_MEMBER = "fercli.json"


def check_metadata(metadata, path) -> dict:
    classes = metadata.get("classes") if isinstance(metadata, dict) else None
    size = metadata.get("input_size") if isinstance(metadata, dict) else None
    if (not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes)
            or not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 1024):
        raise UserError(f"{path} has malformed fercli metadata ({METADATA_MEMBER} needs 'classes', a list of two or "
                        "more names, and 'input_size', a side in pixels).")
    return metadata
