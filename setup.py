"""Build the Cython extensions of edge.

    pip install .                       # builds cext/*.pyx (Cython is a build requirement)
    python setup.py build_ext --inplace --cython-annotate   # writes cext/*.html (cython -a)
    EDGE_DEBUG=1 pip install -e .       # line tracing + bounds checks, for profiling and tests

Every extension has a pure-Python twin (cext/_*_py.py); EDGE_NO_EXTENSIONS=1 at run time
selects the twins.
"""
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.extension import Extension

EXTENSIONS = ["arena", "sketch", "wtlfu", "shm", "httphead"]


class build_ext(_build_ext):
    user_options = _build_ext.user_options + [
        ("cython-always", None, "run cythonize() even if .c files are present"),
        ("cython-annotate", None, "produce a colorized HTML version of the Cython source"),
    ]
    boolean_options = _build_ext.boolean_options + ["cython-always", "cython-annotate"]

    def initialize_options(self):
        super().initialize_options()
        self.cython_always = False
        self.cython_annotate = False

    def finalize_options(self):
        from Cython.Build import cythonize

        debug = os.environ.get("EDGE_DEBUG") == "1"
        directives = {
            "language_level": "3",
            "boundscheck": debug,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        }
        if debug:
            directives["linetrace"] = True
            for ext in self.distribution.ext_modules:
                ext.define_macros = [("CYTHON_TRACE_NOGIL", "1")]
        self.distribution.ext_modules = cythonize(
            self.distribution.ext_modules,
            compiler_directives=directives,
            annotate=self.cython_annotate,
            force=self.cython_always,
        )
        super().finalize_options()


ext_modules = [
    Extension(
        f"cext.{name}",
        [f"cext/{name}.pyx"],
        extra_compile_args=["-O2"] if sys.platform != "win32" else [],
    )
    for name in EXTENSIONS
]

setup(
    packages=[
        "edge", "edge.http", "edge.server", "edge.cache",
        "cext", "eviction", "origin_clients", "edge.configs",
    ],
    package_dir={"edge.configs": "configs"},
    package_data={"edge.configs": ["*.toml"], "cext": ["*.pyi", "*.pxd", "*.pyx", "includes/*.h"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
)
