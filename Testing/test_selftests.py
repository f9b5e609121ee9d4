"""What *Reload and Test* runs: both modules' self-tests, in the harness. Their waits on the engine keep the event
loop running; the longest stall is printed, not bounded: the self-tests themselves load volumes and export labels
on the main thread (a few hundred ms), which the panels' flows, bounded in test_panel_*, do not."""
import pytest
from slicer_harness import Heartbeat


@pytest.mark.slow
@pytest.mark.parametrize("module", ["PGLPretrain", "PGLSegmentation"])
def test_module_self_test_passes_in_the_harness(slicer_app, module):
    import slicer

    slicer_app.load_module(module)
    beat = Heartbeat().start()
    slicer.selfTests[module]()
    stall = beat.stop()
    assert slicer_app.shown("delayDisplay")[-1] == f"{module.replace('PGL', 'PGL ', 1)} self-test passed"
    print(f"{module} self-test: longest event-loop stall {stall:.0f} ms")


@pytest.mark.parametrize("module", ["PGLPretrain", "PGLSegmentation"])
def test_in_testing_mode_without_the_engine_packages_the_self_test_installs_nothing_and_says_so(slicer_app, module,
                                                                                              monkeypatch):
    """The extensions factory runs self-tests in testing mode on a fresh Slicer: no torch, MONAI, nibabel."""
    import slicer

    from PGLCommon import dependencies

    real_version = dependencies.importlib.metadata.version

    def version(name):
        if name.lower() in ("torch", "monai", "nibabel"):
            raise dependencies.importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(dependencies.importlib.metadata, "version", version)
    monkeypatch.setattr(slicer.app, "testingEnabled", lambda: True)
    installs = []
    monkeypatch.setattr(dependencies, "ensure_dependencies", lambda **kwargs: installs.append(kwargs))
    slicer_app.load_module(module)
    slicer.selfTests[module]()
    assert not installs
    said = slicer_app.shown("delayDisplay")[-1]
    assert "skipped" in said and "testing mode" in said and "torch>=2.1" in said and "nibabel" in said, said
