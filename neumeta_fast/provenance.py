"""Where a result came from: package and torch versions, git commit, device, date, command line."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone

import torch

from ._version import __version__


def provenance(device: torch.device) -> dict:
    """The facts a results file needs to be compared with another one later."""
    commit, dirty = _git_state()
    return {
        "package_version": __version__,
        "git_commit": commit,  # None outside a git checkout (an installed package)
        "git_uncommitted_changes": dirty,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": _device_name(device),
        "torch_threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": shlex.join([os.path.basename(sys.executable), *sys.argv]),
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)"


def _git_state() -> tuple[str | None, bool | None]:
    """(commit, uncommitted changes) of the checkout this package runs from; (None, None) if none."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return None, None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # no git installed, or it hangs
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
