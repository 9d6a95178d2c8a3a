"""Compare the elements carehub reads in FHIR R4 (fhir.resources 6.4.0) with the R4B models it validates with.

fhir.resources 8.x (pydantic v2) has no R4 package, and 6.4.x (R4, pydantic v1) cannot be
installed beside it, so this reads 6.4.0's source without importing it:

    pip download --no-deps fhir.resources==6.4.0 -d /tmp/fr6
    unzip -q /tmp/fr6/fhir.resources-6.4.0-py2.py3-none-any.whl -d /tmp/fr6/x
    .venv/bin/python tools/compare_fhir_releases.py /tmp/fr6/x

It prints, per class (resource and backbone element), the element names only one release has.
6.4.0 declares a class's own elements only; those inherited from Resource, DomainResource and
BackboneElement (id, meta, extension...) are the same in both and are not counted. Element types
and cardinalities are not compared.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

MODULES = ("bundle", "messageheader", "patient", "encounter", "condition", "organization", "location",
           "operationoutcome")
INHERITED = {"id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension",
             "fhir_comments", "resource_type"}


def r4_classes(root: Path, module: str) -> dict[str, set[str]]:
    tree = ast.parse((root / "fhir" / "resources" / f"{module}.py").read_text())
    return {node.name: {item.target.id for item in node.body
                        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                        and not item.target.id.endswith("__ext")} - INHERITED
            for node in tree.body if isinstance(node, ast.ClassDef)}


def main(root: Path) -> int:
    classes = differing = 0
    for module in MODULES:
        r4b = importlib.import_module(f"fhir.resources.R4B.{module}")
        for name, elements in r4_classes(root, module).items():
            classes += 1
            model = getattr(r4b, name, None)
            if model is None:
                differing += 1
                print(f"{module}.{name}: not in R4B")
                continue
            other = {n for n in model.model_fields if not n.endswith("__ext")} - INHERITED
            if elements != other:
                differing += 1
                print(f"{module}.{name}: only R4 {sorted(elements - other)}, only R4B {sorted(other - elements)}")
    print(f"{classes} classes compared, {differing} differ")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
