"""A panel's fields bound to the parameters its logic takes (no Qt needed: widgets are read and written through
their properties), so that one table per panel says which widget holds which parameter."""
from __future__ import annotations

from typing import Sequence


class Field:
    """A panel field bound to a parameter: a widget's property (`prop`), several widgets' (x, y, z) as a tuple,
    or a combo box whose texts stand for values (`choices`: text -> value)."""

    def __init__(self, widgets: str | Sequence[str], prop: str = "value", choices: dict | None = None):
        self.names = (widgets,) if isinstance(widgets, str) else tuple(widgets)
        self.prop, self.choices = prop, choices

    def read(self, ui):
        widgets = [getattr(ui, name) for name in self.names]
        if self.choices is not None:
            return self.choices[widgets[0].currentText]
        values = tuple(getattr(widget, self.prop) for widget in widgets)
        return values if len(values) > 1 else values[0]

    def write(self, ui, value) -> None:
        widgets = [getattr(ui, name) for name in self.names]
        if self.choices is not None:
            widgets[0].currentIndex = list(self.choices.values()).index(value)
            return
        for widget, one in zip(widgets, value if len(widgets) > 1 else [value]):
            setattr(widget, self.prop, one)


def read_fields(ui, fields: dict[str, Field]) -> dict:
    """The bound fields' values by parameter name."""
    return {name: field.read(ui) for name, field in fields.items()}


def write_fields(ui, fields: dict[str, Field], values: dict) -> None:
    """Show `values` (by parameter name) in the bound fields; names without a field are left out."""
    for name, field in fields.items():
        if name in values:
            field.write(ui, values[name])
