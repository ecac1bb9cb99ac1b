"""Several small config files read in one probe, each returned byte for byte.

Package managers keep their configuration as directories of small files
(sources.list.d, preferences.d, yum.repos.d, modules.d); one probe dumps
them all between marker lines instead of one round trip per file.
"""

from __future__ import annotations

from gpuprov.facts.base import FactError

__all__ = ["dump_files_script", "parse_dumped_files"]

_FILE_BEGIN = "@@gpuprov-file "
_FILE_END = "\n@@gpuprov-file-end\n"


def dump_files_script(*globs: str) -> str:
    """sh that prints every existing file of `globs` between marker lines.

    The end marker is preceded by a newline we add, so contents come back
    byte for byte, whether or not the file ends with a newline.
    """
    pattern = " ".join(globs)  # globs are our own constants: left unquoted to expand
    return (f"for f in {pattern}; do [ -f \"$f\" ] || continue; "
            f"printf '{_FILE_BEGIN}%s\\n' \"$f\"; cat -- \"$f\"; "
            "printf '\\n@@gpuprov-file-end\\n'; done")


def parse_dumped_files(output: str) -> dict[str, str]:
    files: dict[str, str] = {}
    pos = 0
    while True:
        start = output.find(_FILE_BEGIN, pos)
        if start < 0:
            return files
        eol = output.index("\n", start)
        path = output[start + len(_FILE_BEGIN):eol]
        end = output.find(_FILE_END, eol)
        if end < 0:
            raise FactError(f"{path}: file dump not terminated")
        files[path] = output[eol + 1:end]
        pos = end + len(_FILE_END)
