"""Build the compiled core, ``shared_queue._core``; all other metadata is in pyproject.toml.

This file holds only what pyproject.toml cannot say without setuptools' experimental
``[tool.setuptools.ext-modules]`` table: the extension, and a ``build_ext`` that reports a
missing C compiler or missing Python headers in one line. There is no pure-Python fallback:
the extension is required (issue 11).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext
from setuptools.errors import PlatformError

HINT = "install gcc, or install a prebuilt wheel"


class Build(build):
    """``build`` that compiles first: a missing compiler is the first and last thing it says."""

    sub_commands = sorted(build.sub_commands, key=lambda sub: sub[0] != "build_ext")


class BuildExt(build_ext):
    """``build_ext`` that checks the toolchain first and fails in one clear line."""

    def build_extensions(self) -> None:
        self._check_toolchain()
        super().build_extensions()

    def _check_toolchain(self) -> None:
        # self.compiler is set up by now: CC/LDSHARED from the environment, else sysconfig's.
        # setup() prints a PlatformError as one "error: ..." line, with no traceback.
        for attr in ("compiler_so", "linker_so"):
            argv = getattr(self.compiler, attr, None) or []
            if argv and shutil.which(argv[0]) is None:
                source = "CC" if os.environ.get("CC") else "the Python build's CC"
                raise PlatformError(
                    "shared_queue: building the C extension needs a C compiler (gcc or clang); "
                    f"none was found ({shlex.join(argv[:1])}, from {source}) — {HINT}"
                )
        include = sysconfig.get_paths()["include"]
        if not os.path.exists(os.path.join(include, "Python.h")):
            raise PlatformError(
                "shared_queue: building the C extension needs the Python headers; "
                f"Python.h is not in {include} — install python3-dev (Debian/Ubuntu) or "
                "python3-devel (Fedora/RHEL), or install a prebuilt wheel"
            )


setup(
    ext_modules=[
        Extension(
            "shared_queue._core",
            sources=["shared_queue/_core.c"],
            define_macros=[("_GNU_SOURCE", None)],
            # After Python's own CFLAGS (which may say -O3), so these win.
            extra_compile_args=["-O2", "-std=c11", "-pthread"],
            extra_link_args=["-pthread"],
            # On glibc < 2.34 (manylinux2014 has 2.17) sem_* and pthread_* live in libpthread
            # (-pthread), shm_open & co. in librt and dlsym in libdl; on newer glibc these are
            # empty stubs.
            libraries=["rt", "dl"],
        )
    ],
    cmdclass={"build": Build, "build_ext": BuildExt},
)
