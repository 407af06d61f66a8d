"""A real S3 API on 127.0.0.1 (moto's standalone server) for the tests and benchmarks that need an
object store: the node store of an S3 `checkpoint_dir`, with nothing reaching the network."""

from __future__ import annotations

from pathlib import Path

# moto takes any credentials; pyarrow's S3 client needs some (and must not ask EC2 for them)
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "raysweep-test",
    "AWS_SECRET_ACCESS_KEY": "raysweep-test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3_server(folder: Path):
    """A real S3 API on 127.0.0.1 (moto's standalone server: the S3 wire protocol over HTTP, objects
    in its memory); returns (process, port, log file) once it answers. Its log lists every request,
    so a test can see a multipart upload happen."""
    import subprocess
    import sys
    import time
    import urllib.request

    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / "s3.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "a"),
        start_new_session=True,
    )
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
            return proc, port, log
        except OSError as e:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"the S3 server did not start: {log.read_text()[-2000:]}") from e
            time.sleep(0.3)


def s3_uri(port: int, bucket: str, path: str = "nodes") -> str:
    """A node store in the test S3 server (raysweep.store.storage: pyarrow's S3 options in the query)."""
    return f"s3://{bucket}/{path}?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1&allow_bucket_creation=true"
