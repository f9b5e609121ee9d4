"""An engine process that ends without its answer is explained in words: never a bare exit code or a traceback."""
from types import SimpleNamespace

import pytest

from PGLCommon.engine_failure import failure_in_words

TRACEBACK = ["Traceback (most recent call last):", '  File "/x/pgl_engine/cli.py", line 9, in main',
             "    run(args)"]


@pytest.mark.parametrize("error_message, exit_code, stderr, expected", [
    ("images: no scans found", 1, TRACEBACK + ["RuntimeError: ignored"], "images: no scans found"),
    (None, 1, TRACEBACK + ["ModuleNotFoundError: No module named 'nibabel.loadsave'"],
     "the Python package nibabel cannot be imported"),
    (None, 1, TRACEBACK + ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"],
     "unexpected error: CUDA out of memory. Tried to allocate 2.00 GiB"),
    (None, 1, TRACEBACK + ["MemoryError"], "unexpected error: MemoryError"),
    (None, -9, [], "ended by the operating system (signal 9)"),
    (None, 3, ["some output"], "stopped without saying why"),
])
def test_the_failure_is_put_in_words(error_message, exit_code, stderr, expected):
    words = failure_in_words(SimpleNamespace(error_message=error_message, exit_code=exit_code, stderr_tail=stderr))
    assert expected in words
    assert "Traceback" not in words and "exit code" not in words and 'File "' not in words
