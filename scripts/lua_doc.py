#!/usr/bin/env python3
"""Writes docs/lua-api.md, the Lua module's reference, from the doc comments
in bindings/lua/*.c.

A doc comment sits right above the C function behind one Lua function or
method and starts with ``/* lua:`` and the Lua signature; then come free
text and the fields ``Returns:``, ``Errors:`` and ``Example:`` (one line of
Lua):

    /* lua: treadle.sleep(seconds)
     * Suspends the calling task for `seconds`.
     * Returns: nothing.
     * Errors: raises outside a task.
     * Example: treadle.sleep(0.25) */
    static int l_sleep(lua_State *L) {

    scripts/lua_doc.py                 rewrites docs/lua-api.md
    scripts/lua_doc.py --html FILE     ... and writes it as HTML to FILE too
    scripts/lua_doc.py --check         fails if docs/lua-api.md is not what
                                       the sources give, or if a function the
                                       module registers has no doc comment
"""
import argparse
import difflib
import html
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "bindings" / "lua"
OUTPUT = ROOT / "docs" / "lua-api.md"
FIELDS = ("Returns", "Errors", "Example")

# Receiver (what comes before the function's name) -> section title and
# what the receiver is. Receivers not listed here get a section of their
# own at the end, named after them.
SECTIONS = {
    "require": ("The module", None),
    "treadle": ("Functions", None),
    "rt": ("Runtimes", "`rt` is a runtime from `treadle.runtime()`."),
    "task": ("Tasks", "`task` is what `treadle.spawn()` and `rt:spawn()` return."),
    "ch": ("Channels", "`ch` is a channel from `treadle.channel()`."),
    "treadle.tcp": ("TCP", None),
    "listener": ("Listeners", "`listener` is what `treadle.tcp.bind()` returns."),
    "conn": ("Connections", "`conn` is what `treadle.tcp.connect()` and `listener:accept()` return."),
    "timer": ("Timers", "`timer` is what `treadle.at()` and `treadle.every()` return."),
    "treadle.shared": ("Shared dictionaries", None),
    "dict": ("Shared dictionary methods", "`dict` is what `treadle.shared.dict()` returns. "
             "They follow OpenResty's `ngx.shared.DICT`."),
    "sock": ("Cosockets", "`sock` is what `treadle.tcp.socket()`, `treadle.tcp.connect()` and "
             "`listener:accept()` return (a `conn`): OpenResty's `ngx.socket.tcp` API."),
    "treadle.process": ("Processes", None),
    "proc": ("Process objects", "`proc` is what `treadle.process.spawn()` returns: OpenResty's `ngx.pipe` API."),
    "treadle.udp": ("UDP", None),
    "udp": ("UDP sockets", "`udp` is what `treadle.udp.socket()` returns: OpenResty's `ngx.socket.udp` API."),
    "ngx": ("The ngx table", "`ngx` is what `require \"treadle.ngx\"` returns."),
    "ngx.worker": ("ngx.worker", None),
    "ngx.re": ("ngx.re", "Regular expressions over PCRE2, as OpenResty's over PCRE."),
    "table": ("table.new", "After `require \"treadle.ngx\"`: LuaJIT's `require \"table.new\"` "
              "(and `require \"table.clear\"`, which empties a table in place)."),
    "ffi": ("ffi", "`ffi` is what `require \"ffi\"` returns after `require \"treadle.ngx\"`: "
            "LuaJIT's FFI as far as byte buffers go (what OpenResty's pure-Lua libraries "
            "use one for); any other field raises."),
    "stdin": ("Standard input", "`stdin` is what `treadle.stdin()` returns."),
    "console": ("The console's input", "`console` is what the Lua part of `treadle.repl()` "
                "reads its lines from; programs do not get one."),
}

DOC = re.compile(r"/\* lua: (.*?)\*/\s*\n([^\n]*)", re.S)
DEFINITION = re.compile(r"^static int (l_\w+)\(lua_State \*L\)", re.M)
REGISTRY = re.compile(r"static const luaL_Reg (\w+)\[\] = \{(.*?)\};", re.S)
ENTRY = re.compile(r'\{"(\w+)",\s*(l_\w+)\}')
SETFIELD = re.compile(r'lua_pushcfunction\(L, (l_\w+)\);\s*lua_setfield\(L, -2, "(\w+)"\)')


def parse_block(text):
    """A doc comment's text -> signature, description, {field: text}."""
    lines = [re.sub(r"^\s*\* ?", "", line).rstrip() for line in text.rstrip().split("\n")]
    signature, desc, fields, current = lines[0].strip(), [], {}, None
    for line in lines[1:]:
        field = re.match(r"(%s): (.*)" % "|".join(FIELDS), line)
        if field:
            current = field[1]
            fields[current] = [field[2]]
        elif current:
            fields[current].append(line)
        else:
            desc.append(line)
    return signature, " ".join(desc), {k: " ".join(v) for k, v in fields.items()}


def receiver_and_name(signature):
    """'treadle.tcp.bind(host, port)' -> ('treadle.tcp', 'bind')."""
    call = signature.split("(")[0].strip()
    if " " in call:  # require "treadle"
        return call.split()[0], None
    head, _, name = call.rpartition(":") if ":" in call else call.rpartition(".")
    return head, name


def collect():
    """Every doc comment: (file, signature, description, fields, the line below)."""
    docs = []
    for path in sorted(SOURCES.glob("*.c")):
        for m in DOC.finditer(path.read_text()):
            docs.append((path.name, *parse_block(m[1]), m[2]))
    return docs


def problems(docs):
    """Functions the module registers without a doc comment, and comments
    whose signature names another function than the one below them."""
    documented = {}
    out = []
    for file, signature, _, _, below in docs:
        d = DEFINITION.match(below)
        if d:
            documented[d[1]] = (file, signature)
    for path in sorted(SOURCES.glob("*.c")):
        text = path.read_text()
        registered = [(fn, name) for _, body in REGISTRY.findall(text) for name, fn in ENTRY.findall(body)]
        registered += SETFIELD.findall(text)
        for fn, name in registered:
            if fn not in documented:
                out.append(f"{path.name}: {fn} (Lua name {name!r}) has no /* lua: ... */ comment above it")
            elif receiver_and_name(documented[fn][1])[1] != name:
                out.append(f"{documented[fn][0]}: the comment above {fn} documents "
                           f"{documented[fn][1]!r}, but it is registered as {name!r}")
    return out


def sections(docs):
    """[(title, intro, [(signature, description, fields)])]: sections in
    SECTIONS order, each in alphabetical order."""
    groups = {}
    for _, signature, desc, fields, _ in sorted(docs, key=lambda d: d[1]):
        groups.setdefault(receiver_and_name(signature)[0], []).append((signature, desc, fields))
    order = [r for r in SECTIONS if r in groups] + sorted(r for r in groups if r not in SECTIONS)
    return [(*SECTIONS.get(r, (f"`{r}`", None)), groups[r]) for r in order]


def markdown(docs):
    out = ["# treadle Lua API", "",
           "<!-- Generated by scripts/lua_doc.py from the `/* lua:` comments in "
           "bindings/lua/*.c: edit those, then run scripts/lua_doc.py. -->", "",
           "`local treadle = require \"treadle\"`; build and run as the README says. "
           "Contents: " + " · ".join(f"[{title}](#{anchor(title)})" for title, _, _ in sections(docs)), ""]
    for title, intro, entries in sections(docs):
        out += [f"## {title}", ""]
        if intro:
            out += [intro, ""]
        for signature, desc, fields in entries:
            out += [f"### `{signature}`", ""]
            if desc:
                out += [desc, ""]
            for field in ("Returns", "Errors"):
                if field in fields:
                    out += [f"**{field}:** {fields[field]}", ""]
            if "Example" in fields:
                out += ["```lua", fields["Example"], "```", ""]
    return "\n".join(out)


def anchor(title):
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def inline_html(text):
    """`code` spans of a text -> HTML."""
    parts = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p)
                   for i, p in enumerate(parts))


def to_html(docs):
    out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\"><title>treadle Lua API</title>",
           "<style>body{font-family:sans-serif;max-width:50em;margin:auto}"
           "pre,code{background:#f4f4f4}h3{margin-bottom:.3em}</style></head><body>",
           "<h1>treadle Lua API</h1>",
           "<p>Generated by scripts/lua_doc.py from the <code>/* lua:</code> comments in "
           "bindings/lua/*.c (the same text as docs/lua-api.md).</p>"]
    for title, intro, entries in sections(docs):
        out.append(f"<h2>{inline_html(title)}</h2>")
        if intro:
            out.append(f"<p>{inline_html(intro)}</p>")
        for signature, desc, fields in entries:
            out.append(f"<h3><code>{html.escape(signature)}</code></h3>")
            if desc:
                out.append(f"<p>{inline_html(desc)}</p>")
            for field in ("Returns", "Errors"):
                if field in fields:
                    out.append(f"<p><b>{field}:</b> {inline_html(fields[field])}</p>")
            if "Example" in fields:
                out.append(f"<pre>{html.escape(fields['Example'])}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with docs/lua-api.md instead of writing it")
    ap.add_argument("--html", type=Path, help="also write the reference as HTML to this file")
    args = ap.parse_args()
    docs = collect()
    text = markdown(docs)
    if args.check:
        issues = problems(docs)
        old = OUTPUT.read_text() if OUTPUT.exists() else ""
        if old != text:
            sys.stdout.writelines(difflib.unified_diff(
                old.splitlines(True), text.splitlines(True), "docs/lua-api.md (committed)",
                "docs/lua-api.md (from bindings/lua/*.c)"))
            issues.append("docs/lua-api.md is out of date: run scripts/lua_doc.py")
        for issue in issues:
            print("lua_doc:", issue)
        return 1 if issues else 0
    OUTPUT.write_text(text)
    if args.html:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(to_html(docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
