"""Generate the Python protobuf/gRPC code and typed stubs from protos/.

The generated files are checked in under carehub/v1/ so that an install needs no
protoc; `--check` regenerates into a scratch directory and fails on any difference,
which `make lint` and the unit tests run, so the checked-in code cannot drift.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = Path("carehub") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_root: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = sorted(
        p for p in (out_root / OUT_PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    )
    # grpc stubs for files without services are empty noise
    for p in list(generated):
        if p.name.endswith(("_pb2_grpc.py", "_pb2_grpc.pyi")) and "Stub" not in p.read_text():
            p.unlink()
            generated.remove(p)
    return generated


def existing(root: Path) -> set[str]:
    pkg = root / OUT_PACKAGE
    return {p.name for p in pkg.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if checked-in code differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        names = {p.name for p in fresh}
        if args.check:
            drift = sorted(names ^ existing(ROOT))
            drift += [
                p.name for p in fresh
                if p.name not in drift and not filecmp.cmp(p, ROOT / OUT_PACKAGE / p.name, shallow=False)
            ]
            if drift:
                print(f"generated protobuf code is stale: {', '.join(drift)}; run `make proto`")
                return 1
            print(f"generated protobuf code is up to date ({len(names)} files)")
            return 0
        (ROOT / OUT_PACKAGE).mkdir(parents=True, exist_ok=True)
        for stale in existing(ROOT) - names:
            (ROOT / OUT_PACKAGE / stale).unlink()
        for p in fresh:
            shutil.copyfile(p, ROOT / OUT_PACKAGE / p.name)
        print(f"wrote {len(fresh)} files to {OUT_PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
