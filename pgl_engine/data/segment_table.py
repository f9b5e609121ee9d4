"""One table of structures across the `.seg.nrrd` files of a training set: segments become label values by what
they are, not by the value each file happens to store them under.

Two segments are one structure when both carry an identifying terminology code and the codes agree, else when
their names agree ignoring case; the same name with two different codes is refused (it cannot be both).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PGLError
from .seg_nrrd import Segment, structure_key

SHOWN = 10  # matches listed in one message before "and N more"


@dataclass
class Entry:
    value: int
    name: str
    key: tuple[str, ...] | None  # identifying terminology code, if any file (or the known name) gives one
    code_text: str = ""
    colour: tuple[int, int, int] | None = None
    source: str = ""  # where the name came from, for messages
    matches: list[str] = field(default_factory=list)  # how other spellings were matched, for the report


def _same_name(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


class StructureTable:
    """Label value -> structure, given (names) or grown from the segments met, in order."""

    def __init__(self, names: dict[int, str]):
        self.fixed = bool(names)  # named labels: a segment outside them is left out, not added
        self.structures = [Entry(v, n, structure_key(n), source="the label names")
                           for v, n in sorted(names.items())]

    def find(self, segment: Segment, path: Path) -> Entry | None:
        """The structure a segment is: by code where both have one, else by name ignoring case."""
        by_code = [s for s in self.structures if segment.code and s.key and s.key == segment.code]
        if by_code:
            return by_code[0]
        for s in self.structures:
            if _same_name(s.name, segment.name):
                if segment.code and s.key:  # the same name, coded as two different structures
                    raise PGLError(
                        f"{path}: segment '{segment.name}' is coded {segment.code_text} but '{s.name}' of "
                        f"{s.source} is coded {s.code_text or 'otherwise'}; one name cannot be two structures. Give "
                        f"them the same terminology in Slicer (Segment Editor: double-click the segment's colour) or "
                        f"different names.")
                return s
        return None

    def assign(self, path: Path, segments: list[Segment]) -> tuple[dict[str, int], list[Segment]]:
        """Segment ID -> label value for the file's segments; also the segments left out (not among the named
        labels)."""
        values, left_out, taken = {}, [], {}
        for segment in segments:
            structure = self.find(segment, path)
            if structure is None and self.fixed:
                left_out.append(segment)
                continue
            if structure is None:
                structure = Entry(len(self.structures) + 1, segment.name, segment.code, segment.code_text,
                                      segment.colour, path.name)
                self.structures.append(structure)
            if structure.value in taken:
                raise PGLError(f"{path}: segments '{taken[structure.value]}' and '{segment.name}' are both "
                               f"'{structure.name}'; merge them in Slicer (Segment Editor: Logical operators > Add) "
                               f"or rename one.")
            taken[structure.value] = segment.name
            self._learn(structure, segment, path)
            values[segment.id] = structure.value
        return values, left_out

    @staticmethod
    def _learn(structure: Entry, segment: Segment, path: Path) -> None:
        """Remember the first colour and code met, and how a differently spelt segment was matched."""
        if structure.colour is None:
            structure.colour = segment.colour
        if structure.key is None and segment.code:
            structure.key, structure.code_text = segment.code, segment.code_text
        if segment.name != structure.name:
            how = f"same terminology, {segment.code_text}" if segment.code and segment.code == structure.key \
                else "same name ignoring case"
            structure.matches.append(f"'{segment.name}' in {path.name} ({how})")

    def names(self) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
        """(value -> name, value -> colour) of the structures."""
        return ({s.value: s.name for s in self.structures},
                {s.value: s.colour for s in self.structures if s.colour is not None})

    def report(self) -> str:
        """How segments of other spellings were matched, "" if all spell their structure alike."""
        lines = [f"{m} taken as '{s.name}'" for s in self.structures for m in s.matches]
        if not lines:
            return ""
        more = f" and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
        return "segments matched across cases: " + "; ".join(lines[:SHOWN]) + more + "."
