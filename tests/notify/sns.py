"""The sandbox's SNS topic of demo-web's catalog entry (seeded: sandbox/account.yaml), read through
a queue of the test's own subscribed to it (moto serves both): what a subscriber would receive."""

from __future__ import annotations

import json

import boto3

TOPIC = "demo-web-releases"
TOPIC_ARN = f"arn:aws:sns:us-east-1:123456789012:{TOPIC}"  # include/apps/demo-web.yaml notify:


class Inbox:
    def __init__(self, sb, queue: str = "demo-web-releases-test-inbox") -> None:
        kw = dict(
            region_name="us-east-1",
            endpoint_url=sb.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.sns, self.sqs = boto3.client("sns", **kw), boto3.client("sqs", **kw)
        arn = self.sns.create_topic(Name=TOPIC)["TopicArn"]
        assert arn == TOPIC_ARN, arn
        self.url = self.sqs.create_queue(QueueName=queue)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
        self.drain()

    def drain(self) -> list[dict]:
        """Every message waiting (SNS envelope: Subject, Message, MessageAttributes), oldest first."""
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            msgs = got.get("Messages", [])
            if not msgs:
                return out
            for m in msgs:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])

    def remove_topic(self) -> None:
        self.sns.delete_topic(TopicArn=TOPIC_ARN)
