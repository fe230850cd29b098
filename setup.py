"""Builds and installs the Python package `treadle` (pip install .).

The extension treadle._core is made of the SWIG wrapper (swig/treadle.i),
the binding's C driver (bindings/python/*.c) and treadle's core (the
files core/sources.txt lists, as CMakeLists.txt reads them), so that it
needs no installed libtreadle. SWIG writes the proxy module
treadle/core.py, which build_py must therefore run after build_ext. Build
in place for the tests with:

    PYTHON=/usr/bin/python3 scripts/build_python.sh

TREADLE_WERROR=1 in the environment makes warnings errors, of the C
compiler and of SWIG (scripts/test_python.sh sets it, as CI runs it).

The core's TLS (core/src/tls.c) links OpenSSL when pkg-config finds it
(Debian: libssl-dev), as CMakeLists.txt does; TREADLE_TLS=0 leaves it
out, and without it the TLS functions answer TREADLE_ENOTLS.
"""
import glob
import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join("bindings", "python", "treadle")


# The warning set of CMakeLists.txt, for the core, the SWIG wrapper and the
# binding alike: change both together.
WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Werror=implicit-function-declaration"]
WERROR = os.environ.get("TREADLE_WERROR", "") not in ("", "0")

class BuildPyAfterExt(build_py):
    """Runs build_ext first, so that SWIG's core.py exists to be copied."""

    def run(self):
        self.run_command("build_ext")
        super().run()


def openssl():
    """(macros, include dirs, libraries, library dirs) for OpenSSL 3, from
    pkg-config, or nothing when it is missing or TREADLE_TLS=0."""
    if os.environ.get("TREADLE_TLS", "") in ("0", "OFF", "off"):
        return [], [], [], []
    pc = shutil.which("pkg-config")
    if pc is None or subprocess.call(
            [pc, "--atleast-version=3.0", "openssl"]) != 0:
        print("treadle: OpenSSL 3 not found (libssl-dev): TLS left out")
        return [], [], [], []

    def flags(opt, prefix):
        out = subprocess.check_output([pc, opt, "openssl"], text=True)
        return [f[len(prefix):] for f in out.split() if f.startswith(prefix)]

    return ([("TREADLE_HAVE_OPENSSL", "1")], flags("--cflags-only-I", "-I"),
            flags("--libs-only-l", "-l"), flags("--libs-only-L", "-L"))


TLS_MACROS, TLS_INCLUDES, TLS_LIBS, TLS_LIBDIRS = openssl()


def core_sources():
    """core/sources.txt: one path a line, relative to this directory."""
    with open(os.path.join(HERE, "core", "sources.txt")) as f:
        return [line.strip() for line in f if line.strip()]


core = Extension(
    "treadle._core",
    sources=["swig/treadle.i"]
    + sorted(glob.glob("bindings/python/*.c"))
    + sorted(glob.glob("bindings/common/*.c"))
    + core_sources(),
    include_dirs=["core/include", "core/src", "bindings/common",
                  "bindings/python"] + TLS_INCLUDES,
    define_macros=[("TREADLE_BUILDING", "1"), ("TREADLE_DLOPEN", "1")]
    + TLS_MACROS,
    libraries=TLS_LIBS,
    library_dirs=TLS_LIBDIRS,
    swig_opts=["-Icore/include", "-Ibindings/common", "-Ibindings/python",
               "-outdir", PKG, "-Wall", "-Wextra"]
    + (["-Werror"] if WERROR else []),
    extra_compile_args=["-std=gnu11", "-fvisibility=hidden"] + WARNINGS
    + (["-Werror"] if WERROR else []),
    extra_link_args=["-pthread"],
)

setup(
    name="treadle",
    version="0.1.0",
    description="An asynchronous runtime in C, built the way Tokio is, for Python",
    package_dir={"": os.path.join("bindings", "python")},
    packages=["treadle"],
    package_data={"treadle": ["py.typed", "*.pyi"]},
    ext_modules=[core],
    cmdclass={"build_py": BuildPyAfterExt},
    python_requires=">=3.11",
)
