"""Names and run records of everything the emulated network creates.

Every object carries PREFIX ("dsd") followed by a 3-character run tag, so that `python -m testbed cleanup`
finds leftovers and never touches anything else: bridges and root-namespace veth ends `dsd<tag>s<NN>...`,
Mininet host shells `mininet:dsd<tag>-<node>`, delay-line processes `dsd-delayline ... --tag <tag>`,
cgroups `cpu/dsd-<tag>/<node>`, probe namespaces `dsdprobe<pid>`.
A run writes /run/dsd/<tag>.json (owner pid, what it created) while it lives; cleanup leaves runs whose
owner is still alive alone unless asked to remove everything.
"""

from __future__ import annotations

import json
import os
import random
import string
import time
from pathlib import Path
from typing import Any

PREFIX = "dsd"
STATE_DIR = Path(os.environ.get("DSD_STATE_DIR", "/run/dsd"))
_ALPHABET = string.ascii_lowercase + string.digits


def new_tag() -> str:
    """A run tag not used by a live or recorded run, nor by any interface on this machine."""
    existing = {p.stem for p in STATE_DIR.glob("*.json")} if STATE_DIR.exists() else set()
    links = set(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else set()
    rng = random.SystemRandom()
    for _ in range(1000):
        tag = rng.choice(string.ascii_lowercase) + "".join(rng.choice(_ALPHABET) for _ in range(2))
        if tag not in existing and not any(l.startswith(PREFIX + tag) for l in links):
            return tag
    raise RuntimeError("no free run tag (too many leftovers? run `python -m testbed cleanup`)")


def write_state(tag: str, **info: Any) -> Path:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = STATE_DIR / f"{tag}.json"
    data = {"tag": tag, "pid": os.getpid(), "started": time.time(), **info}
    path.write_text(json.dumps(data, indent=1))
    return path


def remove_state(tag: str) -> None:
    try:
        (STATE_DIR / f"{tag}.json").unlink()
    except OSError:
        pass


def read_states() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not STATE_DIR.exists():
        return out
    for p in STATE_DIR.glob("*.json"):
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            out[p.stem] = {"tag": p.stem, "pid": None}
    return out


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_running(pid: int | None) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent has not collected it yet)."""
    if not pid_alive(pid):
        return False
    f = stat_fields(Path(f"/proc/{pid}/stat"))
    return bool(f) and f[0] != "Z"


def stat_fields(path: Path) -> list[str] | None:
    """A /proc/PID[/task/TID]/stat file's fields after the command name (state first), or None when the task is
    gone."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def bridge_name(tag: str, index: int) -> str:
    return f"{PREFIX}{tag}s{index:02d}"


def host_label(tag: str, node: str) -> str:
    return f"{PREFIX}{tag}-{node}"
