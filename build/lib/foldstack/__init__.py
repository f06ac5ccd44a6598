"""foldstack: k-fold CNNs + GBDT stacking for Kaggle image + tabular competitions."""

from foldstack.errors import ConfigError, DataError, FoldstackError

__all__ = ["ConfigError", "DataError", "FoldstackError"]
__version__ = "0.1.0"
