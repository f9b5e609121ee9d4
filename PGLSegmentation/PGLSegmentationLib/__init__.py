from .logic import PGLSegmentationLogic  # noqa: F401
