"""Task suites built from BIG-bench's full example sets (the ``bigbench==1.0.0`` sdist).

* :func:`multidoc_items` — multi-document QA over ``disfl_qa``, split by article
  (:func:`train_passages` for training data: train/dev articles only);
* :func:`bbh_task_items` — BBH tasks with hundreds of BIG-bench questions each, lm-eval's
  exemplars as demonstrations (:func:`bbh_tasks`, :func:`bbh_questions`, :func:`demonstrations`);
* :func:`vitaminc_items` — evidence → claim (True / False / Neither).

Nothing is fetched at import time; the sdist is verified (and fetched, where the index still
lists it) on first data access, or ``$PROMPTSIEVE_BIGBENCH_DIR`` names task files to read instead
(see :mod:`._sdist`).
"""

from ._sdist import sdist_path, task_examples
from .bbh import bbh_questions, bbh_task_items, bbh_tasks, demonstrations, split_questions
from .multidoc import (
    MultiDocItem,
    data_source,
    detokenize,
    multidoc_items,
    multidoc_raw,
    passages,
    train_passages,
)
from .vitaminc import vitaminc_items

__all__ = [
    "MultiDocItem",
    "bbh_questions",
    "bbh_task_items",
    "bbh_tasks",
    "data_source",
    "demonstrations",
    "detokenize",
    "multidoc_items",
    "multidoc_raw",
    "passages",
    "sdist_path",
    "split_questions",
    "task_examples",
    "train_passages",
    "vitaminc_items",
]
