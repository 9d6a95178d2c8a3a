"""Packaging of the top-level ``services/`` folder as ``carehub.services``.

The source tree keeps one folder a service under ``services/``; installed, those folders live
under ``carehub.services`` so that nothing named ``services`` lands at the top level of
site-packages. pyproject.toml cannot express a package-dir mapping together with package
discovery, so this file does only that; everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

SERVICES = ["carehub.services", *(f"carehub.services.{p}" for p in find_packages("services"))]

setup(
    packages=[*find_packages(include=["carehub", "carehub.*"]), *SERVICES],
    package_dir={"carehub.services": "services"},
)
