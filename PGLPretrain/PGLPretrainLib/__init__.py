from .logic import PGLPretrainLogic  # noqa: F401
