"""What *Reload and Test* runs: both modules' self-tests, in the harness. Their waits on the engine keep the event
loop running; the longest stall is printed, not bounded: the self-tests themselves load volumes and export labels
on the main thread (a few hundred ms), which the panels' flows, bounded in test_panel_*, do not."""
import pytest
from slicer_harness import Heartbeat


@pytest.mark.parametrize("module", ["PGLPretrain", "PGLSegmentation"])
def test_module_self_test_passes_in_the_harness(slicer_app, module):
    import slicer

    slicer_app.load_module(module)
    beat = Heartbeat().start()
    slicer.selfTests[module]()
    stall = beat.stop()
    assert slicer_app.shown("delayDisplay")[-1] == f"{module.replace('PGL', 'PGL ', 1)} self-test passed"
    print(f"{module} self-test: longest event-loop stall {stall:.0f} ms")
