"""Model bundles: weights as safetensors plus a JSON description; nothing is pickled."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file

from .version import __version__

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "export_bundle"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "easytransfer.json"


def export_bundle(learn, path: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``easytransfer.json`` (architecture, classes, preprocessing) into `path`.

    >>> learn.export("runs/textile-model")  # doctest: +SKIP
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    spec = learn.spec
    state = {k: v.detach().cpu().contiguous() for k, v in learn.model.state_dict().items()}
    tmp = path / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path / WEIGHTS_NAME)
    recipe = getattr(learn.dls, "recipe", None)
    config = {
        "easytransfer_version": __version__,
        "arch": spec.name,
        "source": spec.source,
        "source_arch": spec.arch,
        "classes": [str(c) for c in learn.dls.vocab],
        "multilabel": bool(getattr(learn.dls, "is_multilabel", False)),
        "task": "multi-label" if getattr(learn.dls, "is_multilabel", False) else "single-label",
        "head": dict(getattr(learn, "head_config", None) or {"type": "linear", "dropout": None}),
        "preprocessing": {
            "size": recipe.size if recipe is not None else spec.size,
            "interpolation": recipe.interpolation if recipe is not None else spec.interpolation,
            "mean": list(recipe.mean if recipe is not None else spec.mean),
            "std": list(recipe.std if recipe is not None else spec.std),
            "resize": "shorter side to size, centre crop",
        },
    }
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return path
