"""The node image, built on this machine with no container registry (`make image`,
`python -m testbed.emu.runtime.image build [--models]`).

How it is produced (nothing is pulled from a registry):
1. Base `dsd-base:<suite>`: a minimal Debian root file system of the host's own release with python3 and
   python3-venv, made by `mmdebstrap` from the host's configured apt sources (a Debian package mirror is all
   it needs), with SOURCE_DATE_EPOCH fixed and the host-specific files removed, then `docker import`ed.
2. Wheels: `pip download` on the host, with the host's pip configuration, of the project's dependencies (and the
   `models` extra with --models), pinned to the versions installed in the project's virtualenv (`pip freeze`
   as constraints): the image runs the same library versions as the process runtime.
3. `nodes/Dockerfile` FROM that base: a virtualenv from the wheels (no network during the build), then the
   project's source (testbed/, nodes/, traces/, pyproject.toml), labelled with the project version and a hash
   of that source. Docker's layer cache keeps the virtualenv layer when only the source changed.

On a machine with a registry, `docker build --build-arg BASE=python:3.11-slim-bookworm ...` of the same
Dockerfile, with a context prepared by `prepare_context()`, gives an equivalent image.

`image_version()` is the hash of the source the image must contain; a run checks the image's label against it
(a stale image is rebuilt, or reported with --no-image-build).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Callable

from testbed.errors import InputError
from testbed.files import cache_dir

PROJECT_ROOT = Path(__file__).resolve().parents[3]
REPO = "dsd-node"
BASE_REPO = "dsd-base"
SOURCE_DIRS = ("testbed", "nodes", "traces")
SOURCE_FILES = ("pyproject.toml",)
SOURCE_SUFFIXES = {".py", ".yaml", ".yml", ".npz", ".json", ".c", ".md", ".txt", ".csv"}
IMAGE_PYTHON = "/opt/dsd/venv/bin/python"
IMAGE_SRC = "/opt/dsd/src"
BASE_PACKAGES = ("python3", "python3-venv", "procps")
SOURCE_DATE_EPOCH = "1700000000"


def _source_files() -> list[Path]:
    files = [PROJECT_ROOT / f for f in SOURCE_FILES]
    for d in SOURCE_DIRS:
        for p in sorted((PROJECT_ROOT / d).rglob("*")):
            if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts and "data" not in p.parts:
                files.append(p)
    return files


def image_version() -> str:
    """Hash of the source the node image holds (paths and contents)."""
    h = hashlib.sha256()
    for p in _source_files():
        h.update(str(p.relative_to(PROJECT_ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def project_version() -> str:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]


def image_ref(models: bool = False, version: str | None = None) -> str:
    return f"{REPO}:{version or image_version()}{'-models' if models else ''}"


def host_release() -> tuple[str, str]:
    """(suite, apt sources file) of this Debian host, for the base image."""
    info = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            k, _, v = line.partition("=")
            info[k] = v.strip().strip('"')
    except OSError:
        pass
    suite = info.get("VERSION_CODENAME", "")
    if info.get("ID") != "debian" or not suite:
        raise InputError(
            "make image",
            "the node image's base is made with mmdebstrap from a Debian host's apt sources; "
            "on other hosts build nodes/Dockerfile with --build-arg BASE=<a python 3.11 image>",
        )
    for src in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if src.is_file() and src.read_text().strip():
            return suite, str(src)
    raise InputError(
        "make image", "no apt sources found (/etc/apt/sources.list.d/debian.sources, /etc/apt/sources.list)"
    )


def ensure_base(client, say: Callable[[str], None] = print) -> str:
    suite, sources = host_release()
    ref = f"{BASE_REPO}:{suite}"
    try:
        client.images.get(ref)
        return ref
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound
        pass
    if shutil.which("mmdebstrap") is None:
        raise InputError("make image", "mmdebstrap is not installed (apt-get install mmdebstrap; `make setup` does)")
    say(f"building base image {ref} with mmdebstrap (a minute or two) ...")
    with tempfile.TemporaryDirectory(prefix="dsd-base-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
        r = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--quiet",
                f"--include={','.join(BASE_PACKAGES)}",
                '--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"',
                suite,
                str(tar),
                sources,
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if r.returncode != 0:
            raise InputError("make image", f"mmdebstrap failed: {(r.stderr or r.stdout).strip()[-400:]}")
        with open(tar, "rb") as f:
            client.api.import_image_from_data(f, repository=BASE_REPO, tag=suite)
    return ref


# Dependencies of the project that node programs never import (orchestration only): left out of the image.
NOT_IN_IMAGE = ("ray", "docker")


def requirements(models: bool) -> list[str]:
    proj = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    reqs = [r for r in proj["dependencies"] if re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].strip() not in NOT_IN_IMAGE]
    if models:
        reqs += proj["optional-dependencies"]["models"]
    return reqs


def _constraints() -> str:
    r = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if "==" in ln and not ln.startswith(("-e", "#"))]
    return "\n".join(lines) + "\n"


def wheel_cache() -> Path:
    return cache_dir() / "image-wheels"


def download_wheels(reqs: list[str], constraints: str, dest: Path, say: Callable[[str], None] = print) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    cfile = dest.parent / "constraints.txt"
    cfile.write_text(constraints)
    rfile = dest.parent / "requirements.txt"
    rfile.write_text("\n".join(reqs) + "\n")
    say(f"downloading {len(reqs)} requirements as wheels into {dest} ...")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            "-d",
            str(dest),
            "-r",
            str(rfile),
            "-c",
            str(cfile),
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise InputError("make image", f"pip download failed: {(r.stderr or r.stdout).strip()[-400:]}")


def prepare_context(ctx: Path, models: bool, say: Callable[[str], None] = print) -> None:
    """Fill `ctx` with Dockerfile, requirements.txt, wheels/ and src/."""
    reqs = requirements(models)
    cache = wheel_cache() / ("models" if models else "base")
    download_wheels(reqs, _constraints(), cache / "wheels", say)
    shutil.copy2(PROJECT_ROOT / "nodes" / "Dockerfile", ctx / "Dockerfile")
    (ctx / "requirements.txt").write_text((cache / "requirements.txt").read_text())
    (ctx / "constraints.txt").write_text((cache / "constraints.txt").read_text())
    wheels = ctx / "wheels"
    wheels.mkdir()
    for w in sorted((cache / "wheels").iterdir()):
        try:
            os.link(w, wheels / w.name)
        except OSError:
            shutil.copy2(w, wheels / w.name)
    src = ctx / "src"
    for p in _source_files():
        dst = src / p.relative_to(PROJECT_ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)
        os.utime(dst, (int(SOURCE_DATE_EPOCH), int(SOURCE_DATE_EPOCH)))
    build_kernels(ctx / "cache", say)


KERNEL_BUILDERS = ("nodes.blas", "nodes.rowgemm")  # python -m M compiles M's C library into $DSD_CACHE_DIR


def build_kernels(dest: Path, say: Callable[[str], None] = print) -> None:
    """The nodes' C libraries (MKL's vendor query, the few-row linear kernel), compiled here by the nodes' own build
    rules into `dest`, which the image holds as its DSD_CACHE_DIR: the image has no C compiler. A library that
    does not build is left out (the nodes then run without it and log why)."""
    dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DSD_CACHE_DIR": str(dest)}
    for mod in KERNEL_BUILDERS:
        r = subprocess.run([sys.executable, "-m", mod], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            say(f"warning: {mod}'s library did not build, the node image runs without it: {r.stderr.strip()[-300:]}")


def build_image(client, models: bool = False, say: Callable[[str], None] = print) -> str:
    """Build (or find) the node image for the current source; returns its reference."""
    version = image_version()
    ref = image_ref(models, version)
    base = ensure_base(client, say)
    say(f"building node image {ref} ...")
    with tempfile.TemporaryDirectory(prefix="dsd-image-") as tmp:
        ctx = Path(tmp)
        prepare_context(ctx, models, say)
        labels = {
            "dsd.version": version,
            "dsd.project_version": project_version(),
            "dsd.models": str(models).lower(),
            "dsd.base": base,
        }
        try:
            client.images.build(
                path=str(ctx),
                tag=ref,
                buildargs={"BASE": base},
                labels=labels,
                network_mode="none",
                rm=True,
                forcerm=True,
            )
        except Exception as e:  # noqa: BLE001 - docker.errors.BuildError carries the build log
            log = "".join(ch.get("stream", "") for ch in getattr(e, "build_log", []) or [])
            raise InputError("make image", f"docker build failed: {e}; {log.strip()[-400:]}") from None
    remove_stale(client, models, keep=ref)
    return ref


def remove_stale(client, models: bool, keep: str) -> list[str]:
    """Remove node images of older source versions (the layers they share with `keep` stay); images that a
    container still uses are left."""
    gone = []
    for im in client.images.list(name=REPO):
        if keep in im.tags or (im.labels or {}).get("dsd.models") != str(models).lower():
            continue
        try:
            client.images.remove(im.id)
            gone.extend(im.tags)
        except Exception:  # noqa: BLE001 - in use, or removed meanwhile
            pass
    return gone


def find_image(client, models: bool = False) -> tuple[str | None, str | None]:
    """(reference of the current image or None, version of a stale one or None)."""
    ref = image_ref(models)
    try:
        client.images.get(ref)
        return ref, None
    except Exception:  # noqa: BLE001
        pass
    stale = None
    for img in client.images.list(name=REPO):
        if (img.labels or {}).get("dsd.models") == str(models).lower():
            stale = (img.labels or {}).get("dsd.version", "?")
            break
    return None, stale


def image_info(client, ref: str) -> dict[str, Any]:
    img = client.images.get(ref)
    return {
        "image": ref,
        "image_id": img.id,
        "labels": img.labels or {},
        "size_mb": round(img.attrs.get("Size", 0) / 1e6, 1),
    }


def main(argv: list[str]) -> int:
    from testbed.emu.runtime.engine import ensure_engine

    if not argv or argv[0] not in ("build", "status"):
        print("usage: python -m testbed.emu.runtime.image build|status [--models]", file=sys.stderr)
        return 2
    models = "--models" in argv
    try:
        client = ensure_engine()
        if argv[0] == "status":
            ref, stale = find_image(client, models)
            print(json.dumps({"current": ref, "stale_version": stale, "wanted": image_ref(models)}))
            return 0 if ref else 1
        ref, _ = find_image(client, models)
        if ref is None:
            ref = build_image(client, models)
        print(json.dumps(image_info(client, ref), indent=1))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
