"""Assembles the root filesystem of the runtime image: only what `python -m app` needs.

Run by the Dockerfile's `rootfs` stage with the virtual environment's interpreter, on the
same base the venv was built on (the official python image or the debootstrap-built
Debian one), it copies into ROOT:

- the interpreter (the chain of links from the venv's bin/python to the binary) and its
  standard library, without the parts a server never imports (test suites, IDLE, Tk,
  distutils, ensurepip, which carries a pip wheel), byte-compiled for a read-only filesystem;
- the virtual environment;
- every shared library those binaries and extension modules link, as ldd resolves them,
  plus libgcc_s (glibc loads it at run time to cancel and unwind threads); the standard
  library's extension modules for terminals, Tk, NIS and Berkeley DB are left out, and
  with them the libraries only they need;
- with the venv's extension modules stripped of their symbol tables and debug sections
  (`strip --strip-unneeded`: wheels ship them unstripped, 13 MB of uvloop's 13.6), and
  without files nothing at run time reads (type stubs, Cython and C sources, source maps,
  the Swagger UI files app/web/docs.py does not serve, the test frameworks SQLAlchemy and
  Alembic ship for their own suites);
- CA certificates, the C library's name-service and network files, and an /etc/passwd
  and /etc/group that know root and the service's user;
- for each Debian package a copied file came from: its copyright file, and its dpkg
  record under /var/lib/dpkg/status.d/ (as distroless images do), so that scanners such
  as trivy still find and match the packages inside.

No shell, package manager, pip or core utilities are copied, so the image has none.

    python runtime_root.py ROOT [--uid 10001]
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

VENV = Path("/opt/venv")
# Standard-library parts no server imports, by directory name under the stdlib.
STDLIB_LEFT_OUT = frozenset(
    {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "distutils"}
)
# Files the C library, OpenSSL and Python's socket module read, where the base has them, and
# the release files by which scanners know the distribution whose advisories apply.
SYSTEM_FILES = (
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl/certs/ca-certificates.crt",
    "/usr/lib/ssl/cert.pem",
    "/usr/lib/ssl/openssl.cnf",
    "/etc/ssl/openssl.cnf",
)
# Extension modules of the standard library no server imports (by name before the first dot).
DYNLOAD_LEFT_OUT = frozenset(
    {"readline", "_curses", "_curses_panel", "_tkinter", "nis", "_dbm", "_gdbm", "ossaudiodev", "spwd", "_crypt"}
    | {"_testcapi", "_testbuffer", "_testimportmultiple", "_testinternalcapi", "_testmultiphase", "_testclinic"}
    | {"_ctypes_test", "xxlimited", "xxlimited_35", "_xxsubinterpreters", "_xxtestfuzz", "audioop"}
)
# Test frameworks that runtime packages ship inside themselves (pytest plugins and fixtures
# for their own suites): package-relative folders under site-packages.
VENV_FOLDERS_LEFT_OUT = ("sqlalchemy/testing", "alembic/testing")
# Files of installed packages nothing reads at run time, by suffix.
VENV_FILES_LEFT_OUT = (".pyi", ".pyx", ".pxd", ".c", ".h", ".cpp", ".hpp", ".map")
# Of Swagger UI's dist, what app/web/docs.py serves; the rest (other bundles, a demo page) is not.
SWAGGER_UI_SERVED = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
LIBRARY_DIRS = tuple(
    f"{prefix}/lib/{triplet}-linux-gnu" for triplet in ("x86_64", "aarch64") for prefix in ("", "/usr")
)
# Loaded with dlopen, so ldd cannot see them.
DLOPENED = ("libgcc_s.so.1",)
_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


class Assembly:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.copied: set[str] = set()

    def target(self, path: str | Path) -> Path:
        return self.root / str(path).lstrip("/")

    def merged_usr_links(self) -> None:
        """/lib -> usr/lib and the like, as the base has them (Debian's merged /usr): the
        ELF interpreter path /lib64/ld-linux-x86-64.so.2 is written into every binary."""
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in sorted(Path("/").iterdir()):
            if entry.is_symlink() and os.readlink(entry).lstrip("/").startswith("usr/"):
                self.target(entry).symlink_to(os.readlink(entry))

    def copy(self, path: str | Path, wanted: Callable[[Path], bool] = lambda _: True) -> None:
        """A file or a link as it is, and for a link, what it points to. Paths are taken
        with their directories resolved (/lib/x/libc.so.6 is /usr/lib/x/libc.so.6 here)."""
        given = Path(path)
        source = Path(os.path.realpath(given.parent)) / given.name
        if str(source) in self.copied:
            return
        self.copied.add(str(source))
        destination = self.target(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            link = os.readlink(source)
            if not destination.is_symlink():
                destination.symlink_to(link)
            pointed = source.parent / link if not os.path.isabs(link) else Path(link)
            if pointed.is_dir():
                self.copy_tree(pointed, wanted=wanted)  # a linked folder: with the same filter
            else:
                self.copy(pointed)
        elif source.is_file():
            shutil.copy2(source, destination)
        else:
            raise FileNotFoundError(source)

    def copy_tree(
        self,
        tree: Path,
        *,
        left_out: frozenset[str] = frozenset(),
        wanted: Callable[[Path], bool] = lambda _: True,
    ) -> None:
        tree = Path(os.path.realpath(tree))
        if str(tree) in self.copied:
            return
        self.copied.add(str(tree))
        for directory, subdirectories, files in os.walk(tree):
            subdirectories[:] = [name for name in subdirectories if name not in left_out]
            here = Path(directory)
            self.target(here).mkdir(parents=True, exist_ok=True)
            for name in files + [name for name in subdirectories if (here / name).is_symlink()]:
                if wanted(here / name):
                    self.copy(here / name, wanted)

    def libraries_of(self, binaries: list[Path]) -> set[str]:
        needed: set[str] = set()
        for binary in binaries:
            result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)  # noqa: S603, S607
            if "not a dynamic executable" in result.stderr + result.stdout:
                continue
            if "not found" in result.stdout:
                raise RuntimeError(f"{binary}: a library is missing\n{result.stdout}")
            needed.update(match.group(1) for match in _LDD_PATH.finditer(result.stdout))
        for name in DLOPENED:
            found = [f"{directory}/{name}" for directory in LIBRARY_DIRS if Path(directory, name).exists()]
            if not found:
                raise RuntimeError(f"{name} not found in {LIBRARY_DIRS}")
            needed.add(found[0])
        return needed


def stdlib_file_wanted(path: Path) -> bool:
    return path.parent.name != "lib-dynload" or path.name.split(".")[0] not in DYNLOAD_LEFT_OUT


def venv_file_wanted(path: Path) -> bool:
    if path.name.endswith(VENV_FILES_LEFT_OUT):
        return False
    if any(f"/site-packages/{folder}/" in str(path) for folder in VENV_FOLDERS_LEFT_OUT):
        return False
    return not (path.parent.parent.name == "vendor" and path.parent.name.startswith("swagger-ui-")) or (
        path.name in SWAGGER_UI_SERVED
    )


def strip(files: list[Path]) -> None:
    """Symbol tables and debug sections out; the dynamic symbols the loader needs stay."""
    tool = shutil.which("strip")
    if tool is None:
        raise RuntimeError("strip (binutils) is needed in the build stage")
    subprocess.run([tool, "--strip-unneeded", *map(str, files)], check=True)  # noqa: S603 - our own copies


def interpreter_chain() -> list[Path]:
    """bin/python of the venv, each link it goes through, and the binary itself."""
    chain = [VENV / "bin" / "python"]
    while chain[-1].is_symlink():
        link = os.readlink(chain[-1])
        chain.append(chain[-1].parent / link if not os.path.isabs(link) else Path(link))
    return chain


def extension_modules(*trees: Path) -> list[Path]:
    return [path for tree in trees for path in tree.rglob("*.so*") if path.is_file() and not path.is_symlink()]


def debian_packages(paths: set[str]) -> dict[str, list[str]]:
    """The dpkg package each of ``paths`` came from (files outside any package left out)."""
    if shutil.which("dpkg-query") is None:
        return {}
    owners: dict[str, list[str]] = {}
    for path in sorted(paths):
        # dpkg knows a library by the path it installed, often under /lib (a link to /usr/lib).
        candidates = {path, os.path.realpath(path), path.replace("/usr/lib/", "/lib/", 1)}
        for candidate in candidates:
            result = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True, check=False)  # noqa: S603, S607
            if result.returncode == 0:
                package = result.stdout.split(":", 1)[0].split(",")[0].strip()
                owners.setdefault(package, []).append(path)
                break
    return owners


def record_packages(assembly: Assembly, packages: dict[str, list[str]]) -> None:
    status_dir = assembly.target("/var/lib/dpkg/status.d")
    status_dir.mkdir(parents=True, exist_ok=True)
    for package in sorted(packages):
        record = subprocess.run(  # noqa: S603 - a package name dpkg itself reported
            ["dpkg-query", "-s", package],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (status_dir / package.split(":")[0]).write_text(record)
        documents = Path("/usr/share/doc") / package.split(":")[0]
        if documents.is_symlink():  # shared with another package of the same source
            assembly.copy(documents)
        elif (documents / "copyright").exists():
            assembly.copy(documents / "copyright")


def write_accounts(assembly: Assembly, uid: int) -> None:
    etc = assembly.target("/etc")
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/usr/sbin/nologin\napp:x:{uid}:{uid}:user service:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\napp:x:{uid}:\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("root", type=Path)
    parser.add_argument("--uid", type=int, default=10001)
    args = parser.parse_args()
    assembly = Assembly(args.root)
    assembly.merged_usr_links()

    chain = interpreter_chain()
    for link in chain:
        assembly.copy(link)
    stdlib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])
    assembly.copy_tree(stdlib, left_out=STDLIB_LEFT_OUT | {"site-packages", "dist-packages"}, wanted=stdlib_file_wanted)
    dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    if not dynload.is_relative_to(stdlib):
        assembly.copy_tree(dynload, wanted=stdlib_file_wanted)
    assembly.copy_tree(VENV, wanted=venv_file_wanted)
    strip(extension_modules(assembly.target(VENV)))

    # ldd on the originals (a copy's $ORIGIN would resolve inside ROOT), those kept only.
    modules = [path for path in extension_modules(dynload) if stdlib_file_wanted(path)] + extension_modules(VENV)
    libraries = assembly.libraries_of([chain[-1], *modules])
    for library in sorted(libraries):
        assembly.copy(library)
    for path in SYSTEM_FILES:
        if os.path.lexists(path):
            assembly.copy(path)
    write_accounts(assembly, args.uid)
    # The image's own scratch directory, under ROOT (a relative path: nothing here touches
    # the build machine's /tmp).
    tmp = assembly.target("tmp")
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)

    # The stdlib as the running service imports it, compiled where it will live: the root
    # filesystem is read-only, so nothing can be compiled at start.
    compiled = compileall.compile_dir(
        assembly.target(stdlib), quiet=1, stripdir=str(args.root), prependdir="/", workers=0
    )
    if not compiled:
        raise RuntimeError("byte-compiling the standard library failed")
    # The stdlib's packages by a file of each part (Debian splits it in two) and its modules.
    stdlib_samples = {str(stdlib / "os.py"), str(stdlib / "asyncio" / "__init__.py")}
    packaged = {str(path) for path in [*chain, *modules] if not path.is_relative_to(VENV)} | stdlib_samples
    packaged |= set(SYSTEM_FILES)
    record_packages(assembly, debian_packages(libraries | packaged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
