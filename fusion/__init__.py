"""Fusion of the caption queries of each clip (SPEC §5.2): methods, normalisers, the ``fusion.py`` stage."""
