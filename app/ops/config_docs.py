"""``mosaic config docs``: docs/configuration.md, generated from :mod:`mosaic.settings`.

Every environment variable (``MOSAIC_<SECTION>__<FIELD>``), its type, its default and its
meaning. The meaning is the field's ``Field(description=...)`` when it has one, else the
comment on (or just above) the field in mosaic/settings.py; a section's text is its class
docstring. Secrets never show their default. tests/unit/test_config_docs.py fails when the
committed file differs from what this writes.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import json
import re
import tokenize
from pathlib import Path
from typing import Any

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
_NOQA = re.compile(r"noqa:\s*[A-Z0-9, ]+(-\s*)?")


def register(subparsers: Any) -> None:
    config = subparsers.add_parser("config", help="the settings reference")
    sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    docs = sub.add_parser("docs", help="write docs/configuration.md from the settings")
    docs.add_argument("--check", action="store_true",
                      help="only compare; fail if the file is out of date")
    docs.add_argument("--out", type=Path, default=DOC_PATH, help="where to write it")
    docs.set_defaults(func=_docs)


def _docs(args: argparse.Namespace) -> int:
    return write_generated(args.out, render(), check=args.check, command="mosaic config docs")


def write_generated(out: Path, text: str, *, check: bool, command: str) -> int:
    """Write a generated document, or with ``check`` only say whether it is current."""
    if check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            print(f"{out} is out of date: run '{command}'")
            return 1
        print(f"{out} is current")
        return 0
    out.write_text(text)
    print(f"wrote {out}")
    return 0


def _field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the comment on the field's line or the comment lines just above."""
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = _NOQA.sub("", token.string.lstrip("#").strip()).strip()
            comments[token.start[0]] = text
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(token.start[0])
    found: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above: list[str] = []
            line = item.lineno - 1
            while line in comments and line not in code_lines:
                above.insert(0, comments[line])
                line -= 1
            inline = comments.get(item.lineno, "") if item.lineno in code_lines else ""
            text = " ".join(part for part in (*above, inline) if part)
            found[(node.name, item.target.id)] = text
    return found


def _annotations(source: str) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    found[(node.name, item.target.id)] = ast.unparse(item.annotation)
    return found


def _is_secret(annotation: str) -> bool:
    return "SecretStr" in annotation


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if value is None:
        return "(none)"
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home):] if text.startswith(home) else text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value if not isinstance(value, tuple) else list(value))


def _cell(text: str, code: bool = False) -> str:
    text = text.replace("|", "\\|")
    return f"`{text}`" if code and text else text


def rows() -> list[tuple[str, str, str, str, str]]:
    """(section, variable, type, default, meaning) for every setting, in source order."""
    from pydantic import BaseModel

    from mosaic import settings as module

    source = inspect.getsource(module)
    comments = _field_comments(source)
    annotations = _annotations(source)
    found: list[tuple[str, str, str, str, str]] = []
    root = module.Settings
    for name, field in root.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            for sub_name, sub in kind.model_fields.items():
                key = (kind.__name__, sub_name)
                annotation = annotations.get(key, "")
                found.append((name, f"MOSAIC_{name.upper()}__{sub_name.upper()}", annotation,
                              "(secret)" if _is_secret(annotation) else _default(sub),
                              sub.description or comments.get(key, "")))
        else:
            key = (root.__name__, name)
            annotation = annotations.get(key, "")
            found.append(("", f"MOSAIC_{name.upper()}", annotation,
                          "(secret)" if _is_secret(annotation) else _default(field),
                          field.description or comments.get(key, "")))
    return found


def render() -> str:
    """The whole of docs/configuration.md."""
    from mosaic import settings as module

    sections: dict[str, str] = {"": "General."}
    for name, field in module.Settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and kind.__doc__ and kind.__module__ == module.__name__:
            sections[name] = " ".join(inspect.cleandoc(kind.__doc__).split())
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `mosaic config docs` from mosaic/settings.py; do not edit.",
        "     tests/unit/test_config_docs.py fails when this file is out of date. -->",
        "",
        "Every setting is an environment variable with the prefix `MOSAIC_`; a setting of a",
        "section joins the section and the field with a double underscore",
        "(`MOSAIC_KAFKA__BOOTSTRAP_SERVERS=host:9092`). Lists, tuples and maps are given as",
        "JSON (`MOSAIC_CASSANDRA__HOSTS='[\"10.0.0.1\",\"10.0.0.2\"]'`). Defaults point at the",
        "local stack. Secrets show `(secret)` instead of their default; with",
        "`MOSAIC_ENVIRONMENT=production` the services refuse the local defaults of secrets",
        "(docs/security.md).",
        "",
    ]
    current = None
    for section, variable, annotation, default, meaning in rows():
        if section != current:
            current = section
            out += ["", f"## {('`' + section + '`') if section else 'General'}", ""]
            if section and section in sections:
                out += [sections[section], ""]
            out += ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
        shown_default = default if default.startswith("(") else _cell(default, code=True)
        out.append(f"| `{variable}` | {_cell(annotation, code=True)} | {shown_default} "
                   f"| {_cell(meaning)} |")
    return "\n".join(out) + "\n"
