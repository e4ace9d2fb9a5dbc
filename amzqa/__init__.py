"""amzqa: retrieval-augmented question answering over product catalogs.

Importing the package is cheap; the heavy parts (retrieval, generation) load on first use.
"""

from amzqa.errors import AmzqaError, ArtifactError, ConfigError, InputError, MissingExtraError
from amzqa.records import Answer, Citation, Hit, Product

__version__ = "0.1.0"
__all__ = ["Answer", "AmzqaError", "ArtifactError", "Citation", "ConfigError", "Hit", "InputError",
           "MissingExtraError", "Product", "__version__"]
