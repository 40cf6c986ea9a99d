"""read: a clean, tested PyTorch framework for [SEG]-token reasoning segmentation (READ, CVPR 2025)."""

from read.config import ReadConfig, load_config, save_config

__version__ = "0.1.0"

__all__ = ["Prediction", "ReadConfig", "ReadPipeline", "__version__", "build_read_model", "load_config",
           "save_config"]


def __getattr__(name: str):  # noqa: ANN202 - lazy re-exports (keep `import read` light)
    if name in ("ReadPipeline", "Prediction"):
        import read.infer as infer

        return getattr(infer, name)
    raise AttributeError(f"module 'read' has no attribute {name!r}")


def build_read_model(cfg):  # noqa: ANN001 - lazy re-export (keeps `import read` light)
    """See :func:`read.model.builder.build_read_model`."""
    from read.model.builder import build_read_model as _build

    return _build(cfg)
