"""Checks the rendered Compose file (run by deploy/scripts/check-deploy.sh, with .venv-deploy's python).

    docker-compose -f deploy/compose.yaml config >rendered.yaml && check_compose.py rendered.yaml

- api and worker mount one named volume read-write at LECTOR_STORAGE_ROOT (the job folders every process must
  share until object storage lands), migrate needs none; no LECTOR_S3_* or LECTOR_STORAGE setting;
- every lector service has a read-only root file system and a tmpfs on /tmp;
- the workers' stop_grace_period exceeds LECTOR_SHUTDOWN_GRACE.
Prints one line per failure and exits 1 if there is any.
"""
import re
import sys

import yaml

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def seconds(duration):
    """Seconds of a Compose duration such as 45s, 1m30s or 1m."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"([0-9.]+)(ms|h|m|s)", str(duration))
    return sum(float(n) * units[u] for n, u in parts)


def volume_mounts(service):
    """(source, target, read_only) of each volume, whether written short (a:b[:mode]) or long."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            yield parts[0], parts[1] if len(parts) > 1 else parts[0], len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            yield volume.get("source"), volume.get("target"), bool(volume.get("read_only"))


def main():
    source = sys.stdin if sys.argv[1:] in ([], ["-"]) else open(sys.argv[1])
    compose = yaml.safe_load(source)
    if not isinstance(compose, dict) or not compose.get("services"):
        print("FAIL no Compose services in the input")
        sys.exit(1)
    services = compose["services"]
    named = set((compose.get("volumes") or {}).keys())
    lector = {n: s for n, s in services.items() if s.get("command", [None])[0] in ("serve", "work", "migrate")}
    for role in ("migrate", "api", "worker"):
        if role not in lector:
            fail(f"no lector service {role}")
    for name, service in lector.items():
        env = service.get("environment", {})
        for key in env:
            if key.startswith("LECTOR_S3_") or key == "LECTOR_STORAGE":
                fail(f"{name}: sets {key}: no object storage yet, the job folders are a volume")
        if not service.get("read_only"):
            fail(f"{name}: the root file system is not read-only")
        if not any(str(t).split(":")[0] == "/tmp" for t in service.get("tmpfs", [])):
            fail(f"{name}: no tmpfs on /tmp")
        if service["command"][0] == "migrate":
            continue
        root = env.get("LECTOR_STORAGE_ROOT")
        if not root:
            fail(f"{name}: no LECTOR_STORAGE_ROOT")
            continue
        if not any(src in named and target.rstrip("/") == root.rstrip("/") and not ro
                   for src, target, ro in volume_mounts(service)):
            fail(f"{name}: no named volume mounted read-write at LECTOR_STORAGE_ROOT ({root})")
    api, worker = lector.get("api", {}), lector.get("worker", {})
    shared = {src for src, target, _ in volume_mounts(api)} & {src for src, target, _ in volume_mounts(worker)} & named
    if api and worker and not shared:
        fail("api and worker share no named volume")
    if api and worker and api.get("environment", {}).get("LECTOR_STORAGE_ROOT") != worker.get("environment", {}).get("LECTOR_STORAGE_ROOT"):
        fail("api and worker have different LECTOR_STORAGE_ROOT")
    if worker:
        grace = float(worker.get("environment", {}).get("LECTOR_SHUTDOWN_GRACE", 30))
        if seconds(worker.get("stop_grace_period", "10s")) <= grace:
            fail(f"worker: stop_grace_period must exceed LECTOR_SHUTDOWN_GRACE ({grace:g})")
    if failures:
        sys.exit(1)
    print(f"compose: {len(lector)} lector services; api and worker share the volume {', '.join(sorted(shared))}")


if __name__ == "__main__":
    main()
