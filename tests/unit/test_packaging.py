"""Every file the package reads at run time, other than its modules, is declared as package data:
an install that is not editable (a wheel) otherwise lacks it (the subject-access export's template
was missing from the wheel until this test)."""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]


def test_every_data_file_under_ledger_is_declared_as_package_data():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]
    data_files = [p for p in (ROOT / "ledger").rglob("*") if p.is_file()
                  and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts]

    def covered(path: Path) -> bool:
        for package, patterns in declared.items():
            base = ROOT.joinpath(*package.split("."))
            if base in path.parents:
                relative = PurePosixPath(path.relative_to(base).as_posix())
                if any(relative.match(p) and len(relative.parts) == len(PurePosixPath(p).parts)
                       for p in patterns):
                    return True
        return False

    assert len(data_files) >= 10
    assert [str(p.relative_to(ROOT)) for p in data_files if not covered(p)] == []
