"""A local S3-compatible server for ``ooc bench --remote`` and the tests: moto's standalone server on
127.0.0.1 and a free port, in a process of its own (so that it does not share the GIL with a reader
being measured), started and stopped by a context manager::

    with LocalS3Server() as server:
        server.create_bucket("ooc-bench")
        url = URL("s3://ooc-bench/mnist.zarr", server.storage_options)

The credentials are made up: moto accepts any, and explicit options (or ``environment``) mean that
nothing talks to a real account.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

from ooc.errors import OptionError

REGION = "us-east-1"


class LocalS3Server:
    """moto's S3 server in a subprocess; ``endpoint``, ``storage_options`` and ``environment`` once entered."""

    def __init__(
        self, *, key: str = "testing", secret: str = "testing", timeout: float = 30, option: str = ""
    ):
        self.key, self.secret, self.timeout = key, secret, timeout
        self.option = option  # the command-line option that asked for the server, named by the error
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> LocalS3Server:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_for(port)
        except BaseException:  # Ctrl-C while waiting too: never leave the server running
            self._stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for this server (``URL(..., storage_options)``)."""
        return {
            "endpoint_url": self.endpoint,
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"region_name": REGION},
        }

    @property
    def environment(self) -> dict[str, str]:
        """The standard AWS_* variables that point s3fs (and botocore) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
        }

    def create_bucket(self, name: str) -> None:
        # boto3 comes with moto; s3fs's mkdir would send us-east-1 as a location constraint, which S3 refuses
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=REGION,
        ).create_bucket(Bucket=name)

    def _wait_for(self, port: int) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    what = f"{self.option}: could not" if self.option else "could not"
                    raise OptionError(
                        f"{what} start moto's S3 server (python -m moto.server); pip install 'moto[server]'"
                    ) from None
                time.sleep(0.1)

    def _stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
