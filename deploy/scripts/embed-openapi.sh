#!/usr/bin/env bash
# `make openapi`: after editing Sources/LectorAPI/openapi.json, the document's source of truth, regenerates
# the typed client, Sources/LectorClient, with Apple's swift-openapi-generator (built once in tools/openapi,
# ~10 min), and records the document's SHA-256 beside it. The binary carries the document itself: the CEmbedded
# target compiles the file in with C23's #embed at every build. SecurityTests fails when the client is stale.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
json="$root/Sources/LectorAPI/openapi.json"

generator="$root/tools/openapi/.build/release/swift-openapi-generator"
if [[ ! -x "$generator" ]]; then
  echo "openapi: building swift-openapi-generator in tools/openapi (once)" >&2
  swift build --package-path "$root/tools/openapi" -c release --product swift-openapi-generator >&2
fi
client="$root/Sources/LectorClient"
# Generate beside, and replace the committed files only when the generator succeeded.
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
if ! "$generator" generate "$json" --config "$root/tools/openapi/openapi-generator-config.yaml" --output-directory "$fresh" >"$fresh.log" 2>&1; then
  grep -E "Error|error:" "$fresh.log" | grep -v '^\s*"' | tail -5 >&2
  rm -f "$fresh.log"
  echo "openapi: the generator refused openapi.json; Sources/LectorClient is unchanged" >&2
  exit 1
fi
rm -f "$fresh.log"
find "$client" -name '*.swift' -delete
mv "$fresh"/*.swift "$client"/
# The generator marks each import `@diagnose(UnusedImportAccess, as: ignored)` for Swift 6.4; on 6.3 an import
# a file does not use is a warning, and the project builds with none: drop those imports.
python3 - "$client" <<'PY'
import pathlib, re, sys
for path in pathlib.Path(sys.argv[1]).glob("*.swift"):
    lines = path.read_text().split("\n")
    # Code only: doc comments mention "URL" and "Date" too.
    body = "\n".join(line for line in lines
                     if " import " not in line and not line.startswith("import ") and not line.lstrip().startswith("//"))
    kept, index = [], 0
    while index < len(lines):
        line = lines[index]
        match = re.search(r"public import (?:struct Foundation\.(\w+)|(OpenAPIRuntime))$", line)
        if match:
            used = (match.group(1) and re.search(r"\b(Foundation\.)?%s\b" % match.group(1), body)) or \
                   (match.group(2) and "OpenAPIRuntime." in body)
            if not used:
                # Drop the import and the #if block before it (#if / @diagnose / #endif).
                while kept and kept[-1].strip() in ("#endif", "@diagnose(UnusedImportAccess, as: ignored)", "#if compiler(>=6.4)"):
                    kept.pop()
                index += 1
                continue
        kept.append(line)
        index += 1
    path.write_text("\n".join(kept))
PY
sha256sum "$json" | cut -d' ' -f1 > "$client/openapi.sha256"
echo "openapi: regenerated Sources/LectorClient" >&2
