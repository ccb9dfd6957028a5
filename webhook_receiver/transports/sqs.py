"""SQS: the queue of Elastic Path's ``aws_sqs`` integrations, with boto3 (extra ``[sqs]``).

URLs: the queue's own ``https://sqs.<region>.amazonaws.com/<account>/<name>``,
or ``sqs://<name>`` (``sqs://<account>/<name>`` for another account's queue),
looked up in the region. The region comes from ``region=`` in the query, the
queue URL's host, or boto3's configuration (``AWS_DEFAULT_REGION``); the
credentials from boto3's own chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, a profile, an instance or pod role): they are never
part of a URL, a log line or a repr. ``endpoint_url`` points at another SQS
endpoint (a local one, a VPC endpoint); an ``http://`` queue URL of a host
that is not AWS's is its own endpoint.

Messages are taken with long polling (``wait=`` seconds, 5 by default, at
most 20); while a handler runs, the visibility timeout of its message is
extended every third of it, so that no other consumer takes it. A message
given back is made visible again after the backoff. Poison is left for the
queue's redrive policy, which moves it to the dead-letter queue after
``maxReceiveCount`` receives; a queue without one is reported at start, and
its poison comes back every :attr:`SqsTransport.poison_delay` seconds.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from ..untrusted import logger
from .consumer import Message, Transport, TransportUnavailable

__all__ = ["SqsTransport", "check_endpoint_url", "check_region"]

#: AWS's SQS hosts, each with the region it names: ``sqs.R.amazonaws.com`` (``sqs-fips.``, ``.com.cn``),
#: ``sqs.R.api.aws``, the legacy ``R.queue.amazonaws.com``, and a VPC endpoint's ``....sqs.R.vpce.amazonaws.com``.
_AWS_HOSTS = (
    re.compile(r"sqs(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\Z"),
    re.compile(r"sqs(?:-fips)?\.([a-z0-9-]+)\.api\.aws\Z"),
    re.compile(r"([a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?\Z"),
    re.compile(r"(?:[a-z0-9-]+\.)+sqs\.([a-z0-9-]+)\.vpce\.amazonaws\.com(?:\.cn)?\Z"),
)
#: The legacy host of us-east-1's queues.
_US_EAST_1_LEGACY = "queue.amazonaws.com"


def aws_region_of(host: str) -> str | None:
    """The region an AWS SQS host names (``us-east-1`` for the legacy ``queue.amazonaws.com``), else ``None``."""
    if host == _US_EAST_1_LEGACY:
        return "us-east-1"
    for pattern in _AWS_HOSTS:
        found = pattern.match(host)
        if found is not None:
            return found.group(1)
    return None


_KNOWN = {"region", "wait"}
#: An AWS region's shape: ``eu-west-1``, ``ap-southeast-2``, ``us-gov-west-1``, ``cn-north-1``.
_REGION = re.compile(r"[a-z]{2,8}(?:-[a-z]+)+-[0-9]{1,2}\Z")
#: What another endpoint (ElasticMQ, LocalStack) may call a region: one word, no space or control character.
_ANY_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def check_region(region: str, *, aws: bool = True) -> str:
    """*region*, if it has an AWS region's shape (``eu-west-1``), or with *aws* false, any one word's.

    :param aws: whether the queue is AWS's; another endpoint (ElasticMQ's
        ``elasticmq``) may name its region as it likes.
    :raises ValueError: if it has not (a typo would be sent upstream, or to boto3, as it is).
    """
    if not isinstance(region, str) or not (_REGION if aws else _ANY_REGION).match(region):
        shown = region if isinstance(region, str) and len(region) <= 40 and region.isprintable() else "this"
        raise ValueError(f"{shown!r} is not an AWS region such as 'eu-west-1'")
    return region


def check_endpoint_url(url: str) -> str:
    """*url*, if it is an ``http://`` or ``https://`` endpoint without credentials (they would show in every log line).

    :raises ValueError: if it is not.
    """
    try:
        parts = urlsplit(url)
        has_credentials = parts.username is not None or parts.password is not None
    except ValueError:
        raise ValueError("the SQS endpoint URL is malformed") from None
    if has_credentials:
        raise ValueError("the SQS endpoint URL takes no credentials: boto3 reads them from the environment")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the SQS endpoint URL is http://HOST[:PORT] or https://HOST[:PORT]")
    return url


#: The longest visibility timeout SQS takes (12 hours).
MAX_VISIBILITY = 43_200


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise RuntimeError("consuming from SQS needs boto3: pip install 'webhook_receiver[sqs]'") from None
    return boto3


class SqsTransport(Transport):
    """One SQS queue.

    :param url: the queue URL or ``sqs://[account/]name``.
    :param region: the AWS region, when neither the URL nor boto3's configuration says.
    :param endpoint_url: another SQS endpoint.
    :param client: a boto3 SQS client to use instead of building one.
    :raises ValueError: if *url* is not an SQS queue URL.
    """

    name = "sqs"

    def __init__(
        self, url: str, *, region: str | None = None, endpoint_url: str | None = None, client: Any = None
    ) -> None:
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ValueError("the SQS queue URL is malformed") from None
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "an SQS URL takes no credentials: boto3 reads them from AWS_ACCESS_KEY_ID and"
                " AWS_SECRET_ACCESS_KEY, a profile or a role"
            )
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - _KNOWN)
        if unknown:
            raise ValueError(f"an SQS URL has an unknown parameter {unknown[0]!r}: only region and wait are known")
        self.queue_name = ""
        self.account: str | None = None
        self.queue_url: str | None = None
        self.endpoint_url = None if endpoint_url is None else check_endpoint_url(endpoint_url)
        if query.get("region") and region and query["region"] != region:
            raise ValueError(f"the URL's region={query['region']!r} is not the region given, {region!r}")
        self.region = query.get("region") or region
        if parts.scheme == "sqs":
            path = [unquote(p) for p in (parts.netloc + parts.path).split("/") if p]
            if len(path) not in (1, 2):
                raise ValueError("an sqs:// URL is sqs://NAME or sqs://ACCOUNT/NAME")
            self.account, self.queue_name = (path[0], path[1]) if len(path) == 2 else (None, path[0])
        elif parts.scheme in ("https", "http") and parts.hostname:
            segments = [p for p in parts.path.split("/") if p]
            if len(segments) != 2:
                raise ValueError("an SQS queue URL is https://sqs.REGION.amazonaws.com/ACCOUNT/NAME")
            self.account, self.queue_name = segments
            self.queue_url = f"{parts.scheme}://{parts.netloc}/{segments[0]}/{segments[1]}"
            named = aws_region_of(parts.hostname)
            if named is not None:
                if self.region is not None and self.region != named:
                    raise ValueError(f"the region {self.region!r} is not the queue URL's, {named!r}")
                self.region = named
            if (named is None or ".vpce." in parts.hostname) and endpoint_url is None:
                self.endpoint_url = f"{parts.scheme}://{parts.netloc}"  # its own endpoint (a VPC endpoint's too)
        else:
            raise ValueError("an SQS queue is https://sqs.REGION.amazonaws.com/ACCOUNT/NAME or sqs://NAME")
        if self.region is not None:
            check_region(self.region, aws=self.endpoint_url is None or ".amazonaws.com" in self.endpoint_url)
        try:
            self.wait_seconds = int(query.get("wait", "5"))
        except ValueError:
            raise ValueError("wait= in an SQS URL is whole seconds, 0 to 20") from None
        if not 0 <= self.wait_seconds <= 20:
            raise ValueError("wait= in an SQS URL is whole seconds, 0 to 20")
        self._client = client
        self._own_client = client is None
        self.visibility_timeout = 30
        self.redrive_policy: str | None = None
        #: Seconds before poison comes back on a queue without a redrive policy.
        self.poison_delay = 300
        self.keep_alive_interval = None
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        where = self.queue_url or f"sqs://{self.account + '/' if self.account else ''}{self.queue_name}"
        return where + (f" via {self.endpoint_url}" if self.endpoint_url and self.endpoint_url not in where else "")

    def _errors(self) -> tuple[type[BaseException], ...]:
        import botocore.exceptions

        return (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)

    def _reason(self, exc: BaseException) -> str:
        """What went wrong, without anything boto3 put in the message (it may quote a request)."""
        response = getattr(exc, "response", None)
        if isinstance(response, Mapping):
            error = response.get("Error", {})
            code = error.get("Code") if isinstance(error, Mapping) else None
            if code:
                return f"{type(exc).__name__} {code}"
        return type(exc).__name__

    def connect(self) -> None:
        errors = self._errors()
        try:
            if self._client is None:
                self._client = (
                    _boto3().session.Session().client("sqs", region_name=self.region, endpoint_url=self.endpoint_url)
                )
            if self.queue_url is None:
                kwargs: dict[str, Any] = {"QueueName": self.queue_name}
                if self.account:
                    kwargs["QueueOwnerAWSAccountId"] = self.account
                self.queue_url = self._client.get_queue_url(**kwargs)["QueueUrl"]
            attributes = self._client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
            ).get("Attributes", {})
        except errors as exc:
            raise TransportUnavailable(f"cannot reach {self.description}: {self._reason(exc)}") from None
        self.visibility_timeout = max(1, int(attributes.get("VisibilityTimeout", "30")))
        self.keep_alive_interval = max(0.5, self.visibility_timeout / 3)
        self.redrive_policy = attributes.get("RedrivePolicy")
        if not self.redrive_policy:
            logger.warning(
                "the queue %s has no redrive policy: a poison message comes back every %d s until it expires;"
                " give the queue a dead-letter queue (a RedrivePolicy with maxReceiveCount)",
                self.description,
                self.poison_delay,
            )

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        try:
            answer = self._client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max(1, min(max_messages, 10)),
                WaitTimeSeconds=self.wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except self._errors() as exc:
            raise TransportUnavailable(self._reason(exc)) from None
        messages = []
        for item in answer.get("Messages", []):
            try:
                attempt = int(item.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            except ValueError:
                attempt = 1
            body = item.get("Body", "")
            messages.append(
                Message(
                    body=body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body),
                    message_id=str(item.get("MessageId", "?")),
                    attempt=attempt,
                    handle=item["ReceiptHandle"],
                )
            )
        return messages

    def ack(self, message: Message) -> None:
        self._client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message.handle)

    def ack_many(self, messages: list[Message]) -> None:
        """Delete the messages ten a request (``DeleteMessageBatch``); one that fails comes again, a duplicate."""
        if len(messages) == 1:
            self.ack(messages[0])
            return
        failed = 0
        for start in range(0, len(messages), 10):
            batch = messages[start : start + 10]
            answer = self._client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m.handle} for n, m in enumerate(batch)],
            )
            failed += len(answer.get("Failed") or ())
        if failed:
            logger.warning("%d message(s) could not be deleted; they come again as duplicates", failed)

    @property
    def max_receives(self) -> int | None:
        """The redrive policy's ``maxReceiveCount`` (receives before SQS dead-letters a message), or ``None``."""
        if not self.redrive_policy:
            return None
        try:
            count = json.loads(self.redrive_policy).get("maxReceiveCount")
            return int(count) if count is not None else None
        except (ValueError, TypeError, AttributeError):
            return None

    def retry(self, message: Message, delay: float) -> None:
        self._client.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=message.handle, VisibilityTimeout=min(int(delay), MAX_VISIBILITY)
        )

    def dead_letter(self, message: Message, reason: str) -> str:
        if self.redrive_policy:  # visible again at once: after maxReceiveCount receives, SQS moves it
            self.retry(message, 0)
            return (
                f"left for the queue's redrive policy (receive {message.attempt}; it moves to the dead-letter"
                " queue after maxReceiveCount)"
            )
        self.retry(message, self.poison_delay)
        return f"the queue has no redrive policy, so it comes back in {self.poison_delay} s"

    def keep_alive(self, messages: list[Message]) -> list[tuple[Message, str]]:
        refused: list[tuple[Message, str]] = []
        for start in range(0, len(messages), 10):
            batch = messages[start : start + 10]
            answer = self._client.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m.handle, "VisibilityTimeout": self.visibility_timeout}
                    for n, m in enumerate(batch)
                ],
            )
            for failed in answer.get("Failed") or ():
                try:
                    refused.append((batch[int(failed.get("Id"))], str(failed.get("Code") or "refused")[:80]))
                except (TypeError, ValueError, IndexError):
                    continue
        return refused

    def close(self) -> None:
        """Nothing to close: what was not deleted becomes visible again after its timeout."""
