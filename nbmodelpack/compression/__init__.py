"""Compression: bundle version → new, smaller bundle version, with an honest report.

``nbmodelpack.compress(ref, quantize="int8", prune=0.5, eval=(x, y))`` writes a
child version and measures parent and child side by side: bytes on disk,
parameters, non-zeros, accuracy on your data (or your metric), CPU latency per
batch, and output drift. The metrics go on the child's card.

- :mod:`.transform` — ``compress`` itself;
- :mod:`.evaluate` — latency, example inputs, shape checks (accuracy is
  :func:`nbmodelpack.pytorch.evaluate.accuracy`);
- :mod:`.report` — :class:`CompressionReport`, :func:`compare`, text/HTML/PNG.

The package is ``compression`` (not ``compress``) so that importing it never
shadows the public function ``nbmodelpack.compress``.

Example:
    >>> from nbmodelpack.compression import compress, CompressionReport  # doctest: +SKIP
"""

from __future__ import annotations

from .report import Comparison, CompressionReport, Row, compare
from .transform import SCHEMES, compress

__all__ = ["SCHEMES", "Comparison", "CompressionReport", "Row", "compare", "compress"]
