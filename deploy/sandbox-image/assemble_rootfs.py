"""Assemble the sandbox image's root filesystem from this machine's files and `docker import` it.

No registry is needed: the image holds busybox (a shell and the usual tools), the Python that runs
this script (interpreter, standard library, numpy) and exactly the shared libraries ``ldd`` says
they need. Layout inside the image::

    /bin/busybox (+ applet links)   /usr/local/bin/python3 -> python3.11
    /usr/local/lib/python3.11/      the standard library, lib-dynload, site-packages/numpy
    /usr/lib/..., /lib64/...         shared libraries at their host paths, indexed by ldconfig
    /submission /model /run/edc /tmp mount points; nobody (65534) in /etc/passwd

The image carries a fingerprint of its inputs as a label; a second run with unchanged inputs
does nothing. Run through ``build.sh``, which picks the interpreter and makes sure busybox exists.
"""

# A command-line tool: it reports on stdout.
# ruff: noqa: T201
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

IMAGE_PYTHON = "/usr/local/bin/python3"
FINGERPRINT_LABEL = "edc.sandbox-image.fingerprint"
IMAGE_ENV_PATH = "/usr/local/bin:/usr/bin:/bin"

PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
IMAGE_PREFIX = Path("/usr/local")
IMAGE_STDLIB = IMAGE_PREFIX / "lib" / f"python{PY_VERSION}"

# Parts of the standard library no submission needs: tests, GUIs, build files, installers.
STDLIB_SKIP_DIRS = {
    "test",
    "tests",
    "idle_test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "site-packages",
    "distutils",
}
STDLIB_SKIP_PREFIXES = ("config-",)
DYNLOAD_SKIP = re.compile(r"^(_test|_tkinter|xx|_xx|_ctypes_test|_curses)")
# Host tools copied (with their libraries) when no busybox is available.
FALLBACK_TOOLS = ("sh", "ls", "cat", "env", "sleep", "id", "true", "false", "head", "echo")
LDD_LINE = re.compile(r"^\s*(\S+)\s*(?:=>\s*(\S+))?\s*\(0x[0-9a-f]+\)\s*$")


@dataclass(frozen=True)
class Entry:
    """One file of the image: copied from ``source`` (a regular file) to ``target``."""

    source: Path
    target: Path  # absolute path inside the image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--tag", help="image tag (default: EDC_SANDBOX_IMAGE or edc-sandbox:latest)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--keep-rootfs", type=Path, help="also leave the assembled tree here")
    args = parser.parse_args()
    tag = args.tag or _settings_image()
    started = time.monotonic()

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        print(f"error: the Docker engine does not answer ({exc}); start it (`dockerd &`).")
        return 1

    entries, links = _plan()
    fingerprint = _fingerprint(entries, links)
    existing, existing_id = _existing_fingerprint(client, tag)
    if existing == fingerprint and not args.force and args.keep_rootfs is None:
        print(f"{tag} is up to date (fingerprint {fingerprint[:12]}); nothing to do.")
        return _smoke_test(client, tag)

    with tempfile.TemporaryDirectory(prefix="edc-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        _assemble(root, entries, links)
        if args.keep_rootfs is not None:
            shutil.copytree(root, args.keep_rootfs, symlinks=True, dirs_exist_ok=True)
        tar_path = Path(tmp) / "rootfs.tar"
        size = _tar(root, tar_path)
        changes = [
            f"LABEL {FINGERPRINT_LABEL}={fingerprint}",
            f"ENV PATH={IMAGE_ENV_PATH}",
            'CMD ["/bin/sh"]',
        ]
        repository, _, image_tag = tag.rpartition(":") if ":" in tag else (tag, "", "latest")
        result = client.api.import_image(
            src=str(tar_path), repository=repository, tag=image_tag, changes=changes
        )
        if "error" in str(result).lower():
            print(f"error: docker import failed: {result}")
            return 1
        _remove_replaced(client, tag, existing_id)

    print(
        f"built {tag}: {len(entries)} files, {size / 1e6:.0f} MB, python {PY_VERSION} "
        f"at {IMAGE_PYTHON}, fingerprint {fingerprint[:12]}, in {time.monotonic() - started:.1f} s"
    )
    return _smoke_test(client, tag)


def _settings_image() -> str:
    try:
        from edc.config import Settings
    except ImportError:  # run outside the package's environment: the documented default
        return "edc-sandbox:latest"
    return Settings().sandbox_image


def _plan() -> tuple[list[Entry], dict[Path, str]]:
    """Every file of the image and every symlink (target path → link text)."""
    entries: list[Entry] = []
    links: dict[Path, str] = {}

    interpreter = Path(sys.base_prefix) / "bin" / f"python{PY_VERSION}"
    if not interpreter.exists():
        interpreter = Path(sys._base_executable).resolve()  # type: ignore[attr-defined]
    entries.append(Entry(interpreter, IMAGE_PREFIX / "bin" / f"python{PY_VERSION}"))
    links[IMAGE_PREFIX / "bin" / "python3"] = f"python{PY_VERSION}"
    links[IMAGE_PREFIX / "bin" / "python"] = f"python{PY_VERSION}"
    # A Debian-built interpreter looks in .../python3/dist-packages instead of site-packages.
    links[IMAGE_PREFIX / "lib" / "python3" / "dist-packages"] = (
        f"../python{PY_VERSION}/site-packages"
    )

    libpython = _libpython(interpreter)
    if libpython is not None:
        entries.append(Entry(libpython, IMAGE_PREFIX / "lib" / libpython.name))

    stdlib = Path(sys.base_prefix) / "lib" / f"python{PY_VERSION}"
    entries.extend(_stdlib_entries(stdlib))

    import numpy  # the one third-party package the sandbox's Python carries

    numpy_dir = Path(numpy.__file__).parent
    site = IMAGE_STDLIB / "site-packages"
    for folder in [numpy_dir, numpy_dir.parent / "numpy.libs"]:
        if folder.is_dir():
            entries.extend(
                Entry(path, site / path.relative_to(numpy_dir.parent))
                for path in _walk(folder, skip_dirs={"tests"})
            )

    entries.extend(_shell_entries(links))
    entries.extend(_library_entries(entries, links))
    entries.sort(key=lambda e: e.target)
    return entries, links


def _libpython(interpreter: Path) -> Path | None:
    for name, resolved in _ldd(interpreter):
        if name.startswith("libpython") and resolved is not None:
            return resolved.resolve()
    return None


def _stdlib_entries(stdlib: Path) -> Iterator[Entry]:
    for path in _walk(stdlib, skip_dirs=STDLIB_SKIP_DIRS, skip_prefixes=STDLIB_SKIP_PREFIXES):
        relative = path.relative_to(stdlib)
        if relative.parts[0] == "lib-dynload" and DYNLOAD_SKIP.match(path.name):
            continue
        # Only the plain byte-code: the image is read-only, so it is never written at run time.
        if path.suffix == ".pyc" and ".opt-" in path.name:
            continue
        yield Entry(path, IMAGE_STDLIB / relative)


def _walk(
    folder: Path, *, skip_dirs: set[str], skip_prefixes: tuple[str, ...] = ()
) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(
            d for d in dirnames if d not in skip_dirs and not d.startswith(skip_prefixes)
        )
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file():
                yield path


def _shell_entries(links: dict[Path, str]) -> Iterator[Entry]:
    busybox = shutil.which("busybox")
    if busybox is not None:
        yield Entry(Path(busybox).resolve(), Path("/bin/busybox"))
        applets = subprocess.run(
            [busybox, "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            if applet != "busybox":
                links[Path("/bin") / applet] = "busybox"
        links[Path("/usr/bin/env")] = "/bin/busybox"
        return
    print("busybox not found: copying a few host tools instead (apt-get install busybox-static)")
    for tool in FALLBACK_TOOLS:
        found = shutil.which(tool)
        if found is not None:
            yield Entry(Path(found).resolve(), Path("/bin") / tool)


def _library_entries(entries: list[Entry], links: dict[Path, str]) -> list[Entry]:
    """The shared libraries every ELF file needs, at their host paths, plus their soname links."""
    own = {e.source.resolve() for e in entries}
    needed: dict[Path, Path] = {}
    for entry in entries:
        if not _is_elf(entry.source):
            continue
        for name, resolved in _ldd(entry.source):
            if resolved is None:
                continue
            real = resolved.resolve()
            if real in own:
                continue
            # Same directory as on the host (after merged-/usr links), under the name asked for.
            target = Path(os.path.realpath(resolved.parent)) / (
                name if "/" not in name else resolved.name
            )
            needed.setdefault(target, real)
    result = [Entry(source, target) for target, source in sorted(needed.items())]
    # The program interpreter is looked up by its literal path (usually /lib64/...).
    # /bin stays a real directory: busybox and its applet links live there.
    for top in ("/lib", "/lib32", "/lib64", "/libx32"):
        if Path(top).is_symlink():
            links.setdefault(Path(top), os.readlink(top))
    return result


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def _ldd(path: Path) -> list[tuple[str, Path | None]]:
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
    found: list[tuple[str, Path | None]] = []
    for line in out.splitlines():
        match = LDD_LINE.match(line)
        if match is None:
            continue
        name, resolved = match.group(1), match.group(2)
        if resolved is None and name.startswith("/"):
            found.append((name, Path(name)))  # the loader itself, named by path
        elif resolved is not None and resolved.startswith("/"):
            found.append((name, Path(resolved)))
    return found


def _fingerprint(entries: list[Entry], links: dict[Path, str]) -> str:
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    for entry in entries:
        stat = entry.source.stat()
        digest.update(f"{entry.target}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(json.dumps(sorted((str(k), v) for k, v in links.items())).encode())
    return digest.hexdigest()


def _existing_fingerprint(client: docker.DockerClient, tag: str) -> tuple[str | None, str | None]:
    """The fingerprint and id of the image ``tag`` names now (None, None when there is none)."""
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None, None
    value = (image.labels or {}).get(FINGERPRINT_LABEL)
    return (value if isinstance(value, str) else None), image.id


def _remove_replaced(client: docker.DockerClient, tag: str, old_id: str | None) -> None:
    """Drop the image the new build replaced, unless something still uses it."""
    if old_id is None or client.images.get(tag).id == old_id:
        return
    with contextlib.suppress(docker.errors.APIError):  # still held by a tag or a container
        client.images.remove(old_id)


def _assemble(root: Path, entries: list[Entry], links: dict[Path, str]) -> None:
    for folder in ("bin", "usr/bin", "etc", "submission", "model", "run/edc", "proc", "dev", "sys"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)
    (root / IMAGE_STDLIB.relative_to("/") / "site-packages").mkdir(parents=True, exist_ok=True)
    # Top-level merged-/usr links first, so libraries land in the real directories.
    for link, text in sorted(links.items(), key=lambda item: len(item[0].parts)):
        if len(link.parts) == 2:
            (root / text.lstrip("/")).mkdir(parents=True, exist_ok=True)
            (root / link.relative_to("/")).symlink_to(text)
    for entry in entries:
        destination = root / entry.target.relative_to("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(entry.source, destination)
    for link, text in links.items():
        destination = root / link.relative_to("/")
        if len(link.parts) == 2 or destination.exists() or destination.is_symlink():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.symlink_to(text)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    library_dirs = sorted({str(e.target.parent) for e in entries if ".so" in e.target.name})
    (root / "etc/ld.so.conf").write_text("\n".join(library_dirs) + "\n")
    subprocess.run(["ldconfig", "-r", str(root)], check=True)


def _tar(root: Path, tar_path: Path) -> int:
    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name, filter=owned_by_root)
    return tar_path.stat().st_size


def _smoke_test(client: docker.DockerClient, tag: str) -> int:
    """Run the image's Python confined the way the sandbox will, and show what it holds."""
    probe = "import sys, numpy; print(sys.version.split()[0], numpy.__version__)"
    try:
        output = client.containers.run(
            tag,
            [IMAGE_PYTHON, "-c", probe],
            network_mode="none",
            read_only=True,
            user="65534:65534",
            cap_drop=["ALL"],
            remove=True,
        )
    except docker.errors.DockerException as exc:
        print(f"error: the image does not run its Python: {exc}")
        return 1
    python_version, numpy_version = output.decode().split()
    print(f"checked {tag}: python {python_version} with numpy {numpy_version} runs as nobody")
    return 0


if __name__ == "__main__":
    sys.exit(main())
