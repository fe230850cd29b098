#!/usr/bin/env bash
# Builds the API references into build/docs/ (open build/docs/index.html):
#   c/       Doxygen HTML of core/include/treadle.h (docs/Doxyfile; a
#            Doxygen warning fails the build)
#   python/  pydoc HTML of the treadle package (the extension is built
#            first, by scripts/build_python.sh, for $PYTHON)
#   lua/     HTML of the Lua reference, which it also rewrites as
#            docs/lua-api.md (scripts/lua_doc.py, from bindings/lua/*.c)
# Installs what is missing with apt-get (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PYTHON="${PYTHON:-/usr/bin/python3}"
scripts/setup.sh doxygen swig python3-dev python3-setuptools

rm -rf build/docs
mkdir -p build/docs/python
doxygen docs/Doxyfile

scripts/build_python.sh
# Every module of the package (treadle, treadle._core, ...), named for pydoc.
mapfile -t modules < <(PYTHONPATH="$root/bindings/python" "$PYTHON" -c '
import pkgutil, treadle
print("treadle")
for m in pkgutil.iter_modules(treadle.__path__):
    print("treadle." + m.name)')
(cd build/docs/python && PYTHONPATH="$root/bindings/python" "$PYTHON" -m pydoc -w "${modules[@]}")
for m in "${modules[@]}"; do
  [ -f "build/docs/python/$m.html" ] || { echo "docs.sh: pydoc wrote no page for $m" >&2; exit 1; }
done

"$PYTHON" scripts/lua_doc.py --html build/docs/lua/index.html

cat >build/docs/index.html <<'EOF'
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>treadle API references</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:auto">
<h1>treadle API references</h1>
<ul>
<li><a href="c/treadle_8h.html">C</a>: <code>treadle.h</code> (Doxygen;
  <a href="c/errno_8h.html">error codes</a>)</li>
<li><a href="python/treadle.html">Python</a>: the <code>treadle</code> package (pydoc)</li>
<li><a href="lua/index.html">Lua</a>: <code>require "treadle"</code>
  (also <a href="../../docs/lua-api.md">docs/lua-api.md</a>)</li>
</ul>
<p>Built by <code>scripts/docs.sh</code>.</p>
</body></html>
EOF
echo "docs.sh: wrote $root/build/docs/index.html"
