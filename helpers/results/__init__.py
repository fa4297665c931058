"""Results: every table registered by name, saved and loaded under ``results/<card>/``, shaped for reading, and the
sentences that state a measured figure, written by code from the results.

- ``registry``: every result table by name: the chapter that writes it, its columns and metadata.
- ``store``: save and load result tables under ``results/<card>/`` (``save`` refuses an unregistered table).
- ``tables``: speed-ups and ratios against a baseline.
- ``prose``: sentences that state a measured figure (``say``); the rule that markdown states none.
"""

from . import prose, registry, store, tables
from .store import ROOT, append_row, chapter_tables, load, meta, path_for, results_dir, save, saved, stored

__all__ = [
    "prose",
    "registry",
    "store",
    "tables",
    "ROOT",
    "append_row",
    "chapter_tables",
    "load",
    "meta",
    "path_for",
    "results_dir",
    "save",
    "saved",
    "stored",
]
