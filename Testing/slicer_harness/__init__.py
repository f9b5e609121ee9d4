"""A Slicer stand-in for running the real module panels in a Qt event loop (see application.py)."""
from .application import Heartbeat, SlicerHarness  # noqa: F401
