"""jsonargparse's nested error reports, turned into one line per problem that names the config key.

Flow: ``lapo fit`` (``cli.fit.LapoCLI``) parses the YAML and command line with jsonargparse.
A value of the wrong type, an unknown option or an unknown ``class_path`` makes jsonargparse
report a tree: every union alternative it tried ("Expected a <class 'NoneType'>"), the classes
it tried, and the whole value it was given (often the entire ``model`` section). The real
problem is one leaf of that tree. :func:`summarize` keeps the leaves, each prefixed with the
key path that led to it, e.g. ``model.grpo.group_size: expected int, got 'abc'``.

Pure text functions: no jsonargparse import, so a change in its wording degrades to the
leaf text itself rather than an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_NOISE = (
    re.compile(r"^Does not validate against any of the Union subtypes$"),
    re.compile(r"^Subtypes: "),
    re.compile(r"^Errors:$"),
    re.compile(r"^Given value( type)?: "),
    re.compile(r"^Expected a <class 'NoneType'>$"),  # the "or null" alternative of an optional value
    re.compile(r"^Not a valid subclass of "),
    re.compile(r"^Subclass types expect one of:$"),
    re.compile(r"^a (class path|dict) "),  # the list under "Subclass types expect one of"
)
_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)":$')
_CLASS = re.compile(r"^Problem with given class_path '(?P<cls>[^']+)':$")
_UNKNOWN_ARG = re.compile(r"^Option '[^']+' is not accepted$")
# (pattern, template, names_its_own_key): a template that names its own key is appended to the
# key path ("model" + "grpo.gruop_size: unknown option"); the others follow "<key path>: ".
_LEAVES = (
    (re.compile(r"^Expected a dot import path string: (?P<v>.+)$"),
     "unknown class_path '{v}': no such class among the plugins (a full dotted path such as "
     "my_package.module.MyClass also works)", False),
    (re.compile(r"^Import path (?P<v>\S+) does not correspond to a subclass of (?P<base>.+)$"),
     "class_path '{v}' is not a {base}", False),
    (re.compile(r"^Option '(?P<v>[^']+)' is not accepted$"), "unknown init argument '{v}'", False),
    (re.compile(r"^Group '(?P<g>[^']+)' does not accept option '(?P<v>[^']+)'$"), "{g}.{v}: unknown option", True),
    (re.compile(r"^Subcommand '\w+' does not accept option '(?P<v>[^']+)'$"), "{v}: unknown option", True),
    (re.compile(r"^Key '(?P<v>[^']+)' is required but not included in config object or undefined$"),
     "{v}: required, but not set", True),
    (re.compile(r"^Expected a <class '(?P<t>\w+)'>\. Got value: (?P<v>.*)$"), "expected {t}, got {v!r}", False),
    (re.compile(r"^Expected a (?P<t>.+?)\. Got value: (?P<v>.*)$"), "expected {t}, got {v!r}", False),
)


def summarize(message: str, accepted: Callable[[str], list[str] | None] | None = None) -> list[str]:
    """One line per leaf problem of a jsonargparse error message, each naming its key.

    ``accepted(class_path)``, if given, lists a class's init arguments: an unknown argument's
    line then ends with the ones it takes.
    Example: the report for an unknown reward class becomes
    ``["model.rewards: unknown class_path 'NoSuchReward': no such class among the plugins ..."]``.
    """
    stack: list[tuple[int, str, str]] = []  # (indent, "key" | "class", text)
    lines: list[str] = []
    for raw in message.splitlines():
        text = raw.strip()
        if not text:
            continue
        indent = len(raw) - len(raw.lstrip())
        if text.startswith("- "):  # a list item: its children are indented past the dash
            text, indent = text[2:].strip(), indent + 2
        text = text.removeprefix("error: ")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if match := _KEY.match(text):
            stack.append((indent, "key", match["key"]))
            continue
        if match := _CLASS.match(text):
            stack.append((indent, "class", match["cls"]))
            continue
        if any(p.match(text) for p in _NOISE) or text.endswith(":"):  # noise, or a header of indented lines
            continue
        keys = [t for _, kind, t in stack if kind == "key"]
        owner = stack[-1][2] if stack and stack[-1][1] == "class" else None  # the class whose arguments failed
        line = _leaf(text, ".".join(keys), owner.rsplit(".", 1)[-1] if owner else None)
        if owner and accepted and _UNKNOWN_ARG.match(text) and (names := accepted(owner)):
            line += f"; {owner.rsplit('.', 1)[-1]} takes: {', '.join(names)}"
        if line not in lines:
            lines.append(line)
    return lines or [message.strip().splitlines()[0] if message.strip() else "invalid configuration"]


def _leaf(text: str, key: str, owner: str | None) -> str:
    """One leaf as ``<key> (<class>): <problem>``, or the leaf's own key appended to ``key``."""
    where = f"{key} ({owner})" if key and owner else key
    for pattern, template, names_key in _LEAVES:
        if match := pattern.match(text):
            found = template.format(**match.groupdict())
            if names_key:
                return f"{key}.{found}" if key else found
            return f"{where}: {found}" if where else found
    if re.match(r"^[a-z_]+(\.[\w\[\]]+)+[ :]", text):  # already starts with a config key
        return text
    return f"{where}: {text}" if where else text
