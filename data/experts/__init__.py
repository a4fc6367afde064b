"""Audio experts that turn raw audio into archive features: one module per expert, each with its front end.

``registry.py`` names them (light: importing it loads no model); ``base.py`` is the interface every expert
implements. Adding an expert = one module here + one line in the registry (see docs/EXTRACT.md).
"""
