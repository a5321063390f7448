"""Backends: one module per adapter, each implementing the protocols the core defines.

``taskhop.sdk.memory`` is the embedded default. AWS (``sqs``, ``dynamodb``) and HTTP adapters
import boto3 or httpx themselves; importing this package imports none of them.
"""
