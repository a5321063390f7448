"""S3 as a ``PayloadStore``: where inputs too large for an SQS message go.

``SqsQueue(url, payloads=S3Payloads(bucket))`` puts an oversized input here and sends the
envelope with ``input_ref = "s3://bucket/key"``; a worker built with
``create_app(..., payloads=S3Payloads(bucket))`` reads it back before validation and deletes
it after the job succeeded. Objects of jobs that failed stay for inspection: give the bucket
a lifecycle rule (the infra templates do) so they expire.

AWS requests: one PutObject per offloaded job; one GetObject and one DeleteObject on the
worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.config import Config
from taskhop.static_contracts import TransportError

from ._aws import aws_errors, make_client

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["S3Payloads"]


class S3Payloads:
    """A ``PayloadStore`` on one S3 bucket.

    Args:
        bucket: the bucket name.
        prefix: the key prefix for payload objects.
        client: a boto3 S3 client to use as is.
        session: a boto3 session to make the client from (otherwise the environment's).
        config: botocore config merged over taskhop's default (standard retries, 8 tries).

    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "taskhop/payloads/",
        client: Any | None = None,
        session: Any | None = None,
        config: Config | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        with aws_errors(TransportError, f"S3 bucket {bucket}"):
            self.client: S3Client = make_client("s3", client=client, session=session, config=config)

    def __repr__(self) -> str:
        return f"S3Payloads({self.bucket!r})"

    def put(self, job_id: str, body: bytes) -> str:
        """Upload the input of ``job_id``; return ``s3://bucket/key``."""
        key = f"{self.prefix}{job_id}.json"
        with aws_errors(
            TransportError, f"offload input to s3://{self.bucket}/{key}", job_ids=(job_id,)
        ):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
            )
        return f"s3://{self.bucket}/{key}"

    def get(self, ref: str) -> bytes:
        """Download what ``ref`` points to."""
        bucket, key = _split(ref)
        with aws_errors(TransportError, f"read offloaded input {ref}"):
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def delete(self, ref: str) -> None:
        """Delete the object (S3 answers a missing key with success too)."""
        bucket, key = _split(ref)
        with aws_errors(TransportError, f"delete offloaded input {ref}"):
            self.client.delete_object(Bucket=bucket, Key=key)


def _split(ref: str) -> tuple[str, str]:
    if not ref.startswith("s3://") or "/" not in ref[5:]:
        raise TransportError(f"not an s3:// reference: {ref!r}", retryable=False)
    bucket, _, key = ref[5:].partition("/")
    return bucket, key
