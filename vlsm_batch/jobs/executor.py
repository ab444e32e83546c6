"""Which executor runs a study: Slurm only when a controller answers, not merely when ``sbatch`` exists."""

from __future__ import annotations

import shutil
import subprocess


def slurm_controller_answers(timeout_s: float = 5.0) -> bool:
    """True when ``scontrol ping`` reaches a controller that is UP."""
    if not shutil.which("scontrol") or not shutil.which("sbatch"):
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "UP" in out.stdout


def choose_executor(requested: str) -> str:
    """Resolve ``auto`` to ``slurm`` or ``local``; explicit choices pass through."""
    if requested == "auto":
        return "slurm" if slurm_controller_answers() else "local"
    return requested


def visible_gpu_ids() -> list[int]:
    """GPU indices on this machine (via nvidia-smi, so torch is not imported on the submit path)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = [ln for ln in out.stdout.splitlines() if ln.startswith("GPU ")]
    return list(range(len(gpus)))
