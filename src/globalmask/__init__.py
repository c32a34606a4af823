"""globalmask: organ segmentation in CT with global binary masks (GBMs).

The pipeline, one module per step: ``io`` -> ``dataset`` -> ``masks`` -> ``preprocess`` ->
``model`` -> ``training`` -> ``infer`` -> ``metrics`` (pure) and ``evaluation`` (folders) -> ``study`` (with its ``report``); ``phantom`` makes
the built-in synthetic cohort and ``cli`` is a thin command-line layer over all of it.
"""

__version__ = "0.1.0"
