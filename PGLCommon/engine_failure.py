"""Why an engine process ended without its answer, in words for the panels: the engine's own error message, else
what its stderr shows (a missing package, the last exception's message, a kill by the system). Never a bare exit
code or a traceback: these mean nothing to the user; the log pane keeps the full stderr."""
from __future__ import annotations

import re

MISSING_MODULE = re.compile(r"^(?:ModuleNotFoundError|ImportError): No module named '([\w.]+)'")
EXCEPTION = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))(?:: ?(.*))?$")


def failure_in_words(job) -> str:
    """`job`: an ended EngineJob (error_message, exit_code, stderr_tail)."""
    if job.error_message:
        return job.error_message
    lines = [line.strip() for line in job.stderr_tail if line.strip()]
    for line in reversed(lines):
        missing = MISSING_MODULE.match(line)
        if missing:
            return (f"the engine cannot start: the Python package {missing.group(1).split('.')[0]} cannot be "
                    f"imported in Slicer's Python. Start again to install what the engine needs; if it was just "
                    f"installed, restart Slicer.")
    for line in reversed(lines):
        error = EXCEPTION.match(line)
        if error:
            return f"the engine stopped on an unexpected error: {error.group(2) or error.group(1)}"
    code = job.exit_code
    if code is not None and code < 0:
        return (f"the engine was ended by the operating system (signal {-code}); this is often a lack of memory: "
                f"try a smaller patch size or batch size.")
    return "the engine stopped without saying why; its output is in the log."
