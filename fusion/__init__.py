"""Fusion of the caption queries of each clip (docs/FUSION.md): methods, normalisers, the ``fusion.py`` stage."""
