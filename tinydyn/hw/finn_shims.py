"""Loading finn-plus for its front end on a machine without Vivado.

finn-plus's `finn build` command stops at start-up when Vivado's simulator (XSI) is missing,
but its Python API runs the whole front end (streamline → HW layers → folding → estimates →
HLS/RTL code generation) with two shims (shared/notes/finn-plus.md):

1. ``finn.xsi`` resolves its simulator names lazily, and the import of
   ``finn.builder.build_dataflow_steps`` asks for ``SimEngine``: we pre-set stubs that fail
   loudly if anything really tries to simulate;
2. ``exit_buildflow()`` records ``get_vivado_root()`` as the tool version and raises without
   ``XILINX_VIVADO``: we substitute a function that answers "none".

FINN keeps settings and generated code in directories named by environment variables; we
point them all inside the build's output directory so nothing lands in ``~/.finn``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from tinydyn.errors import TinydynError

FINN_VERSION = "1.6.1"
NO_VIVADO = "none (front end only)"
_XSI_NAMES = (
    "SimEngine",
    "locate_glbl",
    "compile_sim_obj",
    "get_simkernel_so",
    "load_sim_obj",
    "reset_rtlsim",
    "close_rtlsim",
    "rtlsim_multi_io",
)


class FinnMissingError(TinydynError):
    """finn-plus is not installed."""


class _NoSimulator:
    """Stands in for finn_xsi's names: any use means an RTL simulation was requested."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TinydynError(
            "RTL simulation needs Vivado's XSI simulator: run the bitstream script on a machine with Vivado"
        )


def vivado_root() -> str:
    return os.environ.get("XILINX_VIVADO", NO_VIVADO)


def finn_available() -> bool:
    try:
        importlib.import_module("finn.util.basic")
    except ImportError:
        return False
    return True


def load_finn(work_dir: Path) -> ModuleType:
    """Import finn-plus with the shims; FINN's own directories go under ``work_dir``.

    Returns the ``finn.builder.build_dataflow`` module.
    """
    work_dir = work_dir.resolve()
    for var, sub in (
        ("FINN_BUILD_DIR", "finn_tmp"),
        ("FINN_DEPS", "finn_deps"),
        ("FINN_CUSTOM_HLS", "finn_custom_hls"),
    ):
        (work_dir / sub).mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(work_dir / sub)
    # a settings path that does not exist yet: FINN then derives its settings from FINN_BUILD_DIR
    os.environ["FINN_SETTINGS"] = str(work_dir / "finn_settings.yaml")
    try:
        xsi = importlib.import_module("finn.xsi")
    except ImportError:
        raise FinnMissingError(
            f"finn-plus is not installed: run scripts/setup_finn.sh (finn-plus {FINN_VERSION} into .venv)"
        ) from None
    for name in _XSI_NAMES:
        if name not in vars(xsi):
            setattr(xsi, name, _NoSimulator)
    import finn.util.settings as settings

    settings._SETTINGS = None  # re-read from the environment set above (one build dir per run)
    build_dataflow = importlib.import_module("finn.builder.build_dataflow")
    build_dataflow.get_vivado_root = vivado_root
    return build_dataflow


def finn_version() -> str:
    try:
        from importlib.metadata import version

        return version("finn-plus")
    except Exception:  # noqa: BLE001 - metadata missing means an odd install, not an error
        return "unknown"
