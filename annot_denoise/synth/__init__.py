"""Synthetic annotations: draw realistic scanner marks on clean scans and record their masks.

``drawers`` holds the public ``draw_*`` functions and the ``DRAWERS`` registry. Every
drawer renders each annotation into an 8-bit coverage canvas (``render``), using the
primitives in ``geometry`` and the fonts in ``text``, at places chosen by ``placement``;
``marks`` draws on the anatomy (calipers, arrows, markers, shapes) and ``overlays`` draws
screen furniture (labels, measurement boxes, colour bars).
"""
