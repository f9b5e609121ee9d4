"""Whether a process runs, asked without signalling it. Standard library only: the Slicer side (its work
folders) asks the same question as the engine's run lock."""
from __future__ import annotations

import os

ON_WINDOWS = os.name == "nt"
WORK_FOLDER_RECORD = "pgl-users.json"  # a job's work folder names the processes using it (PGLCommon.work_folders)


def process_running(pid: int) -> bool:
    """Whether a process with this pid exists (on this host). Never signals it: on Windows os.kill(pid, 0) would
    end it. A pid another process reused counts as running."""
    if pid <= 0:
        return False
    if ON_WINDOWS:
        return _running_on_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's), or this platform cannot tell: assume it runs
    return True


def _running_on_windows(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists; anything else: it does not
    try:
        code = ctypes.c_ulong()
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
