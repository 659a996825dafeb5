"""A real S3-compatible server for the tests: `moto_server` (moto[server], the dev extra) on
127.0.0.1, reached over HTTP by boto3 and by DALI's own S3 client exactly as a user's MinIO or
AWS would be. Nothing is mocked: the project's code cannot tell it from another S3 store.

`.ci/run` starts one and names it in ALEXNET_DALI_TEST_S3_ENDPOINT; without it (`make test`,
a single test file) the `s3` fixture starts its own and stops it after the session. Tests that
need a server of their own (one that refuses every key, one stopped mid-run) start it with
`start_server` and stop it with `stop_server`.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENDPOINT_ENV = "ALEXNET_DALI_TEST_S3_ENDPOINT"
# moto accepts any key unless told to check them; these only have to be present
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1"}


def free_port() -> int:
    """A TCP port nobody listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_server_command() -> list[str]:
    """The moto_server executable of this Python's environment."""
    beside = Path(sys.executable).with_name("moto_server")
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found: pip install 'moto[server]' (the dev extra)")
    return [found]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux), so a
    test run that is killed or skips its teardown never leaves a server behind."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_server(port: int | None = None, env: dict[str, str] | None = None,
                 ) -> tuple[subprocess.Popen, str]:
    """Start moto_server on 127.0.0.1 (a free port unless given); (process, endpoint URL) once
    it answers. It is stopped at exit of this process at the latest."""
    port = port or free_port()
    process = subprocess.Popen([*moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent)
    atexit.register(lambda: process.poll() is None and stop_server(process))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited with status {process.returncode}")
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not answer within 30 s")


def stop_server(process: subprocess.Popen) -> None:
    """Stop a server started by `start_server` and wait for it."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class S3:
    """A running server: its endpoint, and the environment a command needs to use it."""

    endpoint: str

    def env(self) -> dict[str, str]:
        """AWS_ENDPOINT_URL and the credentials, for os.environ or a subprocess."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        """A boto3 client of this server (for the tests' own uploads and damage)."""
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.endpoint,
                                              region_name="us-east-1",
                                              aws_access_key_id="testing",
                                              aws_secret_access_key="testing")

    def upload(self, folder: Path, bucket: str, prefix: str) -> str:
        """Copy every file of `folder` to s3://bucket/prefix/ (what `aws s3 sync` does);
        returns that URL."""
        client = self.client()
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")
        return f"s3://{bucket}/{prefix}"
