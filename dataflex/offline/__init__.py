"""One-shot selection (``dataflex-cli select``) on the same model and data loading as training."""
