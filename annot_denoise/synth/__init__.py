"""Synthetic annotations: draw realistic scanner marks on clean scans and record their masks.

``drawers`` holds the public ``draw_*`` functions and the ``DRAWERS`` registry. Every
drawer renders each annotation into an 8-bit coverage canvas (``render``, which also
samples mark colours), using the primitives in ``geometry`` and the fonts in ``text``, at
places chosen by ``placement``; ``marks`` draws on the anatomy (calipers, arrows, markers,
shapes), ``overlays`` types text (labels from ``vocabulary``, side letters, readouts) and
``icons`` draws cursors and body markers. ``scanner_ui`` (with ``ui_parts``) draws what
the scanner itself burns in; ``compress`` re-compresses pairs as JPEG; ``pipeline`` puts
it together (``annotate``, ``synth``). docs/synth.md describes the options.
"""
