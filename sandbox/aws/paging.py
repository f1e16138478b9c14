"""One page of an EC2-query listing the sandbox adds (MaxResults / NextToken, as AWS pages them):
used by ListImagesInRecycleBin (recycle_bin.py) and DescribeImageReferences (image_references.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

from moto.ec2.exceptions import EC2ClientError


def page(response: Any, items: list[Any], lo: int, hi: int) -> tuple[list[Any], str | None]:
    """(this page's items, the next token or None) for the request `response` is answering;
    MaxResults outside lo..hi and a token the sandbox did not make are refused as AWS does."""
    raw_max = response._get_param("MaxResults")
    token = response._get_param("NextToken")
    start = 0
    if token:
        try:
            start = int(json.loads(base64.b64decode(token))["o"])
        except (ValueError, KeyError, TypeError):
            raise EC2ClientError("InvalidNextToken", "The token provided is invalid.") from None
    if raw_max is None:
        return items[start:], None
    max_results = int(raw_max)
    if not lo <= max_results <= hi:
        raise EC2ClientError("InvalidParameterValue", f"MaxResults must be between {lo} and {hi}.")
    end = start + max_results
    nxt = base64.b64encode(json.dumps({"o": end}).encode()).decode() if end < len(items) else None
    return items[start:end], nxt
