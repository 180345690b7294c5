"""Old home of ``Child`` and ``running``, kept so the files that import them from here still
work; new code imports them from ``_support``."""

from _support import Child, running

__all__ = ["Child", "running"]
