"""amzqa: retrieval-augmented question answering over product catalogs.

Importing the package is cheap; the heavy parts (retrieval, generation) load on first use.
"""

from amzqa.errors import AmzqaError, ArtifactError, ConfigError, InputError, MissingExtraError
from amzqa.records import Answer, Citation, Hit, Product

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("QA", "QAConfig"):  # the pipeline pulls in numpy/faiss; load it on first use
        from amzqa.answer import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'amzqa' has no attribute {name!r}")


__all__ = ["QA", "QAConfig", "Answer", "AmzqaError", "ArtifactError", "Citation", "ConfigError", "Hit", "InputError",
           "MissingExtraError", "Product", "__version__"]
