"""IR → C firmware: memory planner, weight packing, Jinja rendering, board projects."""

from tinydyn.codegen.errors import CodegenError
from tinydyn.codegen.project import BuildReport, build_project

__all__ = ["BuildReport", "CodegenError", "build_project"]
