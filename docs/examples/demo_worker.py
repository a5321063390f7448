"""The demo's worker: the app ``taskhop dev`` runs. Resources come from the environment."""

from __future__ import annotations

import os

from demo_contracts import ContactSheet, Resized, ResizeImage, contact_sheet, resize_image
from taskhop.backends.dynamodb import DynamoStore
from taskhop.backends.sqs import SqsQueue
from taskhop.sdk import JobContext, create_app

app = create_app(
    queue=SqsQueue(os.environ["TASKHOP_QUEUE_URL"]),
    store=DynamoStore(os.environ["TASKHOP_TABLE"]),
)


@app.implement(resize_image)
def resize(data: ResizeImage, ctx: JobContext) -> Resized:
    if data["broken"]:
        raise RuntimeError("the image service is down for this one")
    if data["flaky"] and ctx.attempt == 1:
        raise ConnectionError("connection reset, try again")
    return {
        "key": f"thumbs/{data['width']}/{data['url'].rsplit('/', 1)[-1]}",
        "width": data["width"],
    }


@app.implement(contact_sheet)
def sheet(images: list[Resized], ctx: JobContext) -> ContactSheet:
    return {"images": len(images), "keys": [image["key"] for image in images]}
