"""Dependencies point one way: services -> the carehub core, never back, never sideways.

The core (contract, settings, Kafka access, runtime, domain) is the ``carehub`` package; each
service is a folder of ``services/``, installed as ``carehub.services.<name>``. These tests read
the import statements of every module (no import is executed), so a violation fails here with
the file, the line and the import, whether or not that code path ever runs.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())
# The domain holds the rules of care, not the machinery: no broker, no network, no stream framework.
DOMAIN_FORBIDDEN = ("faust", "mode", "kafka", "aiokafka", "grpc", "urllib", "socket", "asyncio", "subprocess",
                    "carehub.kafka", "carehub.runtime", "carehub.sdk", "carehub.partner")


def modules_imported(path: Path, package: str) -> Iterator[tuple[int, str, bool]]:
    """(line, absolute module name, written relative) for every import in ``path``.

    Relative imports are resolved in ``package``.
    """
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, False
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level > len(parts):
                    yield node.lineno, "." * node.level + (node.module or ""), True  # escapes: flagged below
                    continue
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module, node.level > 0
            for alias in node.names:  # `from pkg import submodule`
                yield node.lineno, f"{module}.{alias.name}", node.level > 0


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def package_of(path: Path, top: str, top_dir: Path) -> str:
    """The package a module's relative imports start from: its folder (for __init__.py too)."""
    return ".".join([top, *path.relative_to(top_dir).parent.parts])


def is_service_module(module: str) -> bool:
    return module == "services" or module.startswith(("services.", "carehub.services"))


def service_named(module: str) -> str | None:
    for prefix in ("carehub.services.", "services."):
        if module.startswith(prefix):
            return module[len(prefix):].split(".")[0]
    return None


def test_the_core_never_imports_a_service() -> None:
    bad = []
    for path in python_files(ROOT / "carehub"):
        for line, module, _ in modules_imported(path, package_of(path, "carehub", ROOT / "carehub")):
            if is_service_module(module):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "the core must start services by name (carehub.runtime.services), not import them:\n" + \
        "\n".join(bad)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_itself_and_the_core(service: str) -> None:
    bad = []
    root = ROOT / "services" / service
    for path in python_files(root):
        package = package_of(path, f"services.{service}", root)
        for line, module, relative in modules_imported(path, package):
            if module.startswith("."):
                bad.append(f"{path.relative_to(ROOT)}:{line}: relative import {module} leaves the service")
            elif is_service_module(module) and service_named(module) not in (service, None):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            elif not relative and module.startswith("services.") and service_named(module) == service:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports itself as {module}: use a relative import, "
                           "which works both in the source tree and installed as carehub.services")
    assert not bad, "\n".join(bad)


def test_the_domain_does_no_io() -> None:
    bad = []
    for path in python_files(ROOT / "carehub" / "domain"):
        for line, module, _ in modules_imported(path, package_of(path, "carehub", ROOT / "carehub")):
            if any(module == f or module.startswith(f + ".") for f in DOMAIN_FORBIDDEN):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "carehub.domain is pure: no broker, network or stream framework:\n" + "\n".join(bad)


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The scanner itself: a sideways import and an escaping relative import are both found."""
    service = tmp_path / "alerts"
    service.mkdir()
    (service / "app.py").write_text("from services.timeline import app\nfrom ...carehub import x\n")
    found = {m for _, m, _ in modules_imported(service / "app.py", "services.alerts")}
    assert "services.timeline" in found
    assert "...carehub" in found
    assert service_named("carehub.services.timeline.app") == "timeline"


def test_the_wheel_installs_no_top_level_services_package(tmp_path: Path) -> None:
    """What `pip install .` would put in site-packages: carehub only, the services under it.

    Built from a copy, so that setuptools' build/ folder stays out of the source tree.
    """
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for folder in ("carehub", "services"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("carehub-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("carehub-")}
    assert tops == {"carehub"}
    for service in SERVICES:
        assert f"carehub/services/{service}/__main__.py" in names
    assert "carehub/services/identity/weights/v2.json" in names
    assert any(n.startswith("carehub/domain/data/indicators/") for n in names)
    assert any(n.startswith("carehub/domain/data/alert_rules/") for n in names)
    assert "carehub/domain/data/hl7v2/adt.toml" in names and "carehub/domain/data/hl7v2/facilities.toml" in names
