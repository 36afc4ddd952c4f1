"""Finding trace files by path, file name or short alias (see :func:`find_trace`)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import TraceError

ENV_VAR = "DSD_TRACES_DIR"
ALIASES = {
    "azure-conv": "AzureLLMInferenceTrace_conv.csv",
    "azure-code": "AzureLLMInferenceTrace_code.csv",
}
DOWNLOAD_HINT = (
    "download the Azure LLM inference traces from the AzurePublicDataset repository on GitHub "
    "(https://github.com/Azure/AzurePublicDataset, data/ folder; the 2024 week-long traces are linked from "
    "AzureLLMInferenceDataset2024.md there), BurstGPT from https://github.com/HPMLL/BurstGPT and Mooncake "
    f"from https://github.com/kvcache-ai/Mooncake, then set {ENV_VAR} to the folder holding them"
)


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def search_dirs() -> list[Path]:
    """Directories searched, in order: $DSD_TRACES_DIR entries, <root>/../shared/traces, <root>/traces/data."""
    dirs = [Path(d).expanduser() for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d.strip()]
    root = project_root()
    dirs += [root.parent / "shared" / "traces", root / "traces" / "data"]
    return dirs


def find_trace(name_or_path: str | os.PathLike[str]) -> Path:
    """An existing path as given, else the first match of the name (or alias, or name + .csv / .jsonl)
    in :func:`search_dirs`; TraceError listing the directories searched and where to download traces."""
    given = Path(name_or_path).expanduser()
    if given.is_file():
        return given
    name = str(name_or_path)
    candidates = [ALIASES.get(name, name)]
    if not name.endswith((".csv", ".jsonl")):
        candidates += [name + ".csv", name + ".jsonl"]
    dirs = search_dirs()
    for directory in dirs:
        for candidate in candidates:
            path = directory / candidate
            if path.is_file():
                return path
    searched = ", ".join(str(d) for d in dirs)
    raise TraceError(f"{name}: trace not found (not a file; searched: {searched}); {DOWNLOAD_HINT}")
