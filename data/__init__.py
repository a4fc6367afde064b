"""Data layer: the CLOTHO feature archive loader (data.clotho), the synthetic CLOTHO-format generator
(data.synthetic) and MiniLM caption features (data.text_features). See docs/DATA.md."""
