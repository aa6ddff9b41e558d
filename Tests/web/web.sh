#!/usr/bin/env bash
# The web page in a real browser: Debian's chromium, headless, driven by Python selenium through Debian's
# chromedriver (no browser download). Signs in, uploads two rendered pages, watches them finish without a
# reload, checks the drawn word boxes against result.json and that hostile text stays text, and saves
# screenshots at 1280 and 390 px into Tests/web/screenshots/ (git-ignored).
#
#   Tests/web/web.sh            (make web-test; part of make test)
#
# selenium comes from PyPI into the git-ignored .venv-web; the server runs on its own database, dropped after.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
venv=$root/.venv-web

for tool in /usr/bin/chromium /usr/bin/chromedriver; do
  [[ -x $tool ]] || { echo "web: $tool is missing: deploy/scripts/deps.sh installs chromium and chromium-driver" >&2; exit 1; }
done
if ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check selenium==4.27.1
fi
exec "$venv/bin/python" "$root/Tests/web/web_test.py" "$@"
