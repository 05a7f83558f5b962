"""Fetch the dependencies finn-plus pins for a Vivado build, by finn-plus's own mechanism
(``finn.interface.manage_deps.DependencyUpdater``, what ``finn deps update`` runs, with the
commits and URLs of its ``external_dependencies.yaml``), into the build's ``finn_deps`` (the
``FINN_DEPS`` that :func:`tinydyn.hw.finn_shims.load_finn` sets). ``build_bitstream.sh`` runs it
first; without network it stops with one line naming what to fetch.

    python -m tinydyn.hw.deps OUT_DIR
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

# what the ZedBoard build needs: every HLS layer includes finn-hlslib (finn-plus's HLS backend also
# puts attention-hlslib on the include path), the ZedBoard board files are in Avnet's board
# repository, and finn-plus's RTL simulation (FIFO sizing) builds against nlohmann-json
REQUIRED = ("finn-hlslib", "attention-hlslib", "avnet-bdf", "nlohmann-json")
GIT_TIMEOUT_S = 600.0


def definitions_file() -> Path:
    import finn.interface

    return Path(finn.interface.__file__).parent / "external_dependencies.yaml"


def describe(updater: object, name: str) -> str:
    data = updater.deps.get_dependency_data(name)  # type: ignore[attr-defined]
    commit = getattr(data, "commit", None)
    return f"{name} ({data.url}{' @ ' + commit[:12] if commit else ''})"


def fetch(out_dir: Path, names: tuple[str, ...] = REQUIRED) -> list[str]:
    """Install the ``names`` that are missing or not at their pinned version; the ones that failed."""
    from finn.interface.manage_deps import DependencyUpdater

    deps_dir = out_dir / "finn_deps"
    updater = DependencyUpdater(deps_dir, definitions_file(), GIT_TIMEOUT_S, non_interactive=True)
    failed = []
    for name in names:
        # finn-plus prints its progress with rich: keep this script's output to its own lines
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                ok = not updater.is_outdated(name, installed=True) or updater.install_dependency(name)
            except Exception:  # noqa: BLE001 - finn-plus raises several kinds; each means "not fetched"
                ok = False
        if not ok:
            failed.append(describe(updater, name))
    return failed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tinydyn.hw.deps OUT_DIR", file=sys.stderr)
        return 2
    out_dir = Path(args[0]).resolve()
    try:
        failed = fetch(out_dir)
    except ImportError:
        print("build_bitstream: finn-plus is not installed: run scripts/setup_finn.sh", file=sys.stderr)
        return 1
    if failed:
        print(
            f"build_bitstream: cannot fetch finn-plus's pinned dependencies into {out_dir / 'finn_deps'}: "
            f"{', '.join(failed)}: run build_bitstream.sh with network access (finn-plus's 'finn deps "
            "update' mechanism), or clone them there at those commits",
            file=sys.stderr,
        )
        return 1
    print(f"build_bitstream: finn-plus dependencies present in {out_dir / 'finn_deps'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
