"""Checks rendered Kubernetes manifests (run by deploy/scripts/check-deploy.sh, with .venv-deploy's python).

    check_manifests.py --sql deploy/k8s/keda-queue-depth.sql --kube 1.30.0 RENDERED.yaml...

- core objects (everything but keda.sh): `kubernetes-validate --strict` (unknown fields are errors);
- KEDA objects: the pydantic models of cloudcoil-models-keda with extra fields forbidden;
- every postgresql trigger's query equals the SQL file (less its final newline);
- consistency: worker terminationGracePeriodSeconds > LECTOR_SHUTDOWN_GRACE, targetQueryValue equals
  LECTOR_WORKER_CONCURRENCY; every API and worker pod mounts the ReadWriteMany claim lector-storage read-write at
  LECTOR_STORAGE_ROOT (a shared volume until object storage lands; no LECTOR_S3_* or LECTOR_STORAGE setting);
  a worker's memory request covers LECTOR_WORKER_CONCURRENCY slots of 650 MB and its limit is at least that;
- self-tests: a typo in a core object and in a KEDA object must each be rejected.
Prints one line per failure and exits 1 if there is any.
"""
import argparse
import copy
import os
import subprocess
import sys
import tempfile

import yaml

# Forbid unknown fields in every cloudcoil model: they inherit this config, so set it before they are defined.
import cloudcoil.pydantic  # noqa: E402

cloudcoil.pydantic.BaseModel.model_config["extra"] = "forbid"
from cloudcoil.models.keda import v1alpha1 as keda  # noqa: E402

KEDA_MODELS = {
    "ScaledObject": keda.ScaledObject,
    "ScaledJob": keda.ScaledJob,
    "TriggerAuthentication": keda.TriggerAuthentication,
}
failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def name(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def kubernetes_validate(objects, version):
    """Exit status and output of kubernetes-validate --strict over these objects."""
    tool = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(objects, f)
    try:
        run = subprocess.run([tool, "--strict", "--quiet", "-k", version, f.name], capture_output=True, text=True)
        return run.returncode, (run.stdout + run.stderr).strip()
    finally:
        os.unlink(f.name)


def keda_errors(obj):
    """None when the KEDA object is valid, else pydantic's message."""
    try:
        KEDA_MODELS[obj["kind"]].model_validate(obj, strict=True)
        return None
    except Exception as error:  # pydantic.ValidationError, or a KeyError for an unknown kind
        return str(error).replace("\n", " ")


def worker_pod_specs(objects):
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "lector-worker":
            yield name(obj), obj["spec"]["template"]["spec"]
        if obj["kind"] == "ScaledJob":
            yield name(obj), obj["spec"]["jobTargetRef"]["template"]["spec"]


# What one worker slot may use with the default LECTOR_MAX_PAGE_PIXELS (36 MP): it peaks at about 613 MB.
SLOT_BYTES = 650 * 1000 * 1000
UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value):
    """Bytes of a Kubernetes memory quantity such as 700Mi or 1Gi."""
    text = str(value)
    number = text.rstrip("kKMGTi")
    return float(number) * UNITS[text[len(number):]]


def storage_pods(objects):
    """(name, pod spec, container) of every pod that must share the job folders: the API and the workers."""
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] in ("lector-api", "lector-worker"):
            spec = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "ScaledJob":
            spec = obj["spec"]["jobTargetRef"]["template"]["spec"]
        else:
            continue
        for container in spec["containers"]:
            yield f"{name(obj)}/{container['name']}", spec, container


def check_storage(path, objects, config):
    root = config.get("LECTOR_STORAGE_ROOT")
    if not root:
        fail(f"{path}: ConfigMap lector-config sets no LECTOR_STORAGE_ROOT")
    for key in config:
        if key.startswith("LECTOR_S3_") or key == "LECTOR_STORAGE":
            fail(f"{path}: ConfigMap lector-config sets {key}: no object storage yet, the job folders are a volume")
    for obj in objects:
        if obj["kind"] == "Secret":
            for key in {**obj.get("data", {}), **obj.get("stringData", {})}:
                if key.startswith("LECTOR_S3_"):
                    fail(f"{path}: {name(obj)} has {key}: no object storage yet")
    claims = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    claim = claims.get("lector-storage")
    if claim is None:
        fail(f"{path}: no PersistentVolumeClaim lector-storage")
    elif "ReadWriteMany" not in claim["spec"].get("accessModes", []):
        fail(f"{path}: PersistentVolumeClaim lector-storage is not ReadWriteMany (pods on several nodes share it)")
    pods = list(storage_pods(objects))
    if not pods:
        fail(f"{path}: no API or worker pods")
    for what, spec, container in pods:
        volumes = {v["name"] for v in spec.get("volumes", [])
                   if v.get("persistentVolumeClaim", {}).get("claimName") == "lector-storage"}
        mounts = [m for m in container.get("volumeMounts", []) if m["name"] in volumes]
        if not any(m["mountPath"].rstrip("/") == (root or "").rstrip("/") and not m.get("readOnly") for m in mounts):
            fail(f"{path}: {what} does not mount lector-storage read-write at LECTOR_STORAGE_ROOT ({root})")


def check_worker_memory(path, objects, config):
    needed = SLOT_BYTES * int(config["LECTOR_WORKER_CONCURRENCY"])
    for what, spec, container in storage_pods(objects):
        if "lector-api" in what:
            continue
        resources = container.get("resources", {})
        request = resources.get("requests", {}).get("memory")
        limit = resources.get("limits", {}).get("memory")
        if request is None or limit is None:
            fail(f"{path}: {what}: no memory request or limit")
            continue
        if quantity(request) < needed:
            fail(f"{path}: {what}: memory request {request} is below {needed / 1e6:g} MB "
                 f"(LECTOR_WORKER_CONCURRENCY slots of 650 MB)")
        if quantity(limit) < quantity(request):
            fail(f"{path}: {what}: memory limit {limit} is below the request {request}")


def check(path, sql, version):
    with open(path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    core = [o for o in objects if not o["apiVersion"].startswith("keda.sh/")]
    kedas = [o for o in objects if o["apiVersion"].startswith("keda.sh/")]

    status, output = kubernetes_validate(core, version)
    if status != 0:
        fail(f"{path}: kubernetes-validate --strict -k {version}: {output}")

    config = next(o["data"] for o in core if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "lector-config")
    scalers = 0
    for obj in kedas:
        error = keda_errors(obj)
        if error:
            fail(f"{path}: {name(obj)}: {error}")
        for trigger in obj.get("spec", {}).get("triggers", []):
            if trigger.get("type") != "postgresql":
                continue
            scalers += 1
            meta = trigger["metadata"]
            if meta.get("query") != sql:
                fail(f"{path}: {name(obj)}: the trigger's query differs from keda-queue-depth.sql")
            if meta.get("targetQueryValue") != config["LECTOR_WORKER_CONCURRENCY"]:
                fail(f"{path}: {name(obj)}: targetQueryValue is not LECTOR_WORKER_CONCURRENCY (jobs per pod)")
    if scalers != 1:
        fail(f"{path}: expected one postgresql trigger (ScaledObject or ScaledJob), found {scalers}")

    check_storage(path, objects, config)
    check_worker_memory(path, objects, config)

    grace = float(config["LECTOR_SHUTDOWN_GRACE"])
    workers = list(worker_pod_specs(objects))
    if not workers:
        fail(f"{path}: no worker Deployment or ScaledJob")
    for what, spec in workers:
        if spec.get("terminationGracePeriodSeconds", 30) <= grace:
            fail(f"{path}: {what}: terminationGracePeriodSeconds must exceed LECTOR_SHUTDOWN_GRACE ({grace:g})")
    return core, kedas


def self_tests(core, kedas, version):
    """The validators must reject a misspelt field, or the checks above prove nothing."""
    deployment = copy.deepcopy(next(o for o in core if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 45
    status, _ = kubernetes_validate([deployment], version)
    if status == 0:
        fail("self-test: kubernetes-validate --strict accepted a misspelt Deployment field")
    for obj in kedas:
        for path in (("spec",), ("metadata",)):
            broken = copy.deepcopy(obj)
            target = broken
            for key in path:
                target = target[key]
            target["minReplicaCont"] = 0
            if keda_errors(broken) is None:
                fail(f"self-test: the KEDA model accepted a misspelt field in {name(obj)}.{'.'.join(path)}")
        if obj["kind"] in ("ScaledObject", "ScaledJob"):
            broken = copy.deepcopy(obj)
            broken["spec"]["triggers"][0]["authenticationRef"]["nmae"] = "x"
            if keda_errors(broken) is None:
                fail(f"self-test: the KEDA model accepted a misspelt field in {name(obj)}'s trigger")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sql", required=True)
    parser.add_argument("--kube", default="1.30.0")
    parser.add_argument("rendered", nargs="+")
    args = parser.parse_args()
    with open(args.sql) as f:
        sql = f.read().rstrip("\n")
    for path in args.rendered:
        core, kedas = check(path, sql, args.kube)
        self_tests(core, kedas, args.kube)
    if failures:
        sys.exit(1)
    print(f"manifests: {len(args.rendered)} rendering(s) valid for Kubernetes {args.kube} and KEDA (strict)")


if __name__ == "__main__":
    main()
