"""Progress bars that callers can switch off globally (``AMZQA_PROGRESS=0``) or per call."""

from __future__ import annotations

import os
import sys
from typing import Any


def enabled(progress: bool | None = None) -> bool:
    """Whether to show a bar: explicit argument first, then ``AMZQA_PROGRESS``, then "is stderr a tty"."""
    if progress is not None:
        return progress
    env = os.environ.get("AMZQA_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def bar(progress: bool | None = None, **kwargs: Any):
    """A tqdm bar, disabled unless :func:`enabled` says otherwise."""
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled(progress), dynamic_ncols=True, **kwargs)


def quiet_transformers(progress: bool | None = None) -> None:
    """Align transformers' own bars (weight loading, dataset maps) with ours."""
    if enabled(progress):
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:
        pass
