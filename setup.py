"""Build hook: copy the repository's ``configs/``, ``probes/`` and ``checkpoints/`` into the wheel as
``steerlit/_resources/<kind>/`` (package data found by :mod:`steerlit.resources`). The folders stay at the top of
the repository, where a checkout uses them directly; editable installs copy nothing."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = ("configs", "probes", "checkpoints")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class BuildPyWithResources(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for kind in RESOURCES:
            target = Path(self.build_lib) / "steerlit" / "_resources" / kind
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(root / kind, target, ignore=SKIP)


setup(cmdclass={"build_py": BuildPyWithResources})
