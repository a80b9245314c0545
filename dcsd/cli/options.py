"""Command-line options generated from the recipe's dataclasses, so none is typed twice.

Each field of a :mod:`dcsd.recipe` section becomes ``--field-name`` (or the flag its metadata
names), with the field's type, its choices (from the registries and the constants that define
them) and its documentation as help. A flag left out leaves the recipe's value alone: only the
flags given are overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin, get_type_hints

from dcsd.recipe import SECTIONS, field_choices, field_docs

_SEPARATOR = ":"  # dest = "section:field" (argparse keeps dots and colons in dest as they are)


def flag_name(section: str, name: str) -> str:
    """The command-line flag of ``section.name``: ``--name`` with dashes, or the field's own."""
    for item in dataclasses.fields(SECTIONS[section]):
        if item.name == name:
            return "--" + item.metadata.get("flag", name).replace("_", "-")
    raise KeyError(f"{section}.{name}")


def _scalar(hint: Any) -> tuple[Any, bool]:
    """The scalar type under ``X | None``, and whether ``None`` is allowed."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [arg for arg in get_args(hint) if arg is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return hint, False


def _nullable(kind: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def add_section_options(
    parser: argparse.ArgumentParser | Any,
    section: str,
    *,
    only: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> None:
    """Add a flag for each field of ``section`` (those in ``only``, less ``exclude``).

    bool fields take ``--name`` / ``--no-name``; tuples of numbers take their values
    space-separated (``--image-size 256 128``), tuples of names comma-separated or repeated
    (``--datasets market1501,dukemtmc``); ``X | None`` fields take ``none`` for ``None``.
    """
    cls = SECTIONS[section]
    hints = get_type_hints(cls)
    docs = field_docs(section)
    group = parser.add_argument_group(section, f"recipe section {section!r}")
    for item in dataclasses.fields(cls):
        name = item.name
        if (only is not None and name not in only) or name in exclude:
            continue
        hint, nullable = _scalar(hints[name])
        options: dict[str, Any] = {
            "dest": f"{section}{_SEPARATOR}{name}",
            "default": argparse.SUPPRESS,
            "metavar": item.metadata.get("metavar", name.upper()),
            "help": f"{docs.get(name, '').replace('%', '%%')} [{section}.{name}]",
        }
        choices = field_choices(section, name)
        if hint is bool:
            options["action"] = argparse.BooleanOptionalAction
            del options["metavar"]
        elif get_origin(hint) is tuple:
            args = get_args(hint)
            if args[0] is str:
                options["type"] = _comma_list
                options["action"] = "extend"  # repeatable too: --register a --register b
                options["metavar"] = f"{name.upper()},..."
            else:
                options["type"] = args[0]
                options["nargs"] = "*" if args[-1] is Ellipsis else len(args)
        else:
            options["type"] = _nullable(hint) if nullable else hint
            if choices is not None:
                options["choices"] = choices
                del options["metavar"]
        group.add_argument(flag_name(section, name), **options)


def given_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The recipe settings given as flags, as ``{section: {key: value}}``."""
    settings: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        section, sep, name = dest.partition(_SEPARATOR)
        if sep and section in SECTIONS:
            settings.setdefault(section, {})[name] = (
                list(value) if isinstance(value, tuple | list) else value
            )
    return settings
