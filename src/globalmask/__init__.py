"""globalmask: organ segmentation in CT with global binary masks (GBMs).

The verbs of the Python API are at the package root (defined in :mod:`globalmask.api`)::

    import globalmask

    result = globalmask.train("data/phantom_hn", "runs/gbm", mode="gbm", steps=1000)
    labels = globalmask.predict(result.model_path, "scan.nii.gz")   # nibabel image, the input's grid
    per_case, summary = globalmask.evaluate("preds/", "data/phantom_hn", subset="test")

They are imported on first use, so ``import globalmask`` (and ``globalmask --help``) loads neither
torch nor monai. The pipeline, one module per step: ``io`` -> ``dataset`` -> ``masks`` ->
``preprocess`` -> ``model`` -> ``training`` -> ``infer`` -> ``metrics`` (pure) and ``evaluation``
(folders) -> ``study`` (with its ``report``); ``phantom`` makes the built-in synthetic cohort and
``cli`` is a thin command-line layer over the API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: Name at the package root -> the module that defines it (imported on first use).
_LAZY = {
    "train": "api",
    "predict": "api",
    "evaluate": "api",
    "make_gbm": "api",
    "run_study": "api",
    "TrainConfig": "training",
    "DataConfig": "training",
    "Predictor": "infer",
    "StudyConfig": "study",
}

__all__ = ["DataConfig", "Predictor", "StudyConfig", "TrainConfig", "__version__", "evaluate", "make_gbm", "predict",
           "run_study", "train"]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on demand
    from .api import evaluate, make_gbm, predict, run_study, train
    from .infer import Predictor
    from .study import StudyConfig
    from .training import DataConfig, TrainConfig


def __getattr__(name: str) -> Any:
    """Resolve an API name on first use, importing its module then (torch and monai only there).

    Parameters
    ----------
    name : str
        An attribute of the package.

    Returns
    -------
    Any
        The function or class of that name.
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    """The package's names, the lazy API included (for ``dir()`` and tab completion).

    Returns
    -------
    list[str]
        Sorted names.
    """
    return sorted({*globals(), *_LAZY})
