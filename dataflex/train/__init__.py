"""Training: config schema, model + LoRA building, the SFT runner, plots and export."""

from dataflex.train.config import ExportConfig, TrainConfig, load_export_config, load_train_config

__all__ = ["ExportConfig", "TrainConfig", "load_export_config", "load_train_config"]
