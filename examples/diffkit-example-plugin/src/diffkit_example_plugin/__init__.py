"""An example third-party diffkit plugin: the ``tinyconv`` backbone."""

from .plugin import TinyConv

__all__ = ["TinyConv"]
