"""The demo's worker: the app ``taskhop dev`` runs. Resources come from the environment."""

from __future__ import annotations

import os

from demo_contracts import (
    ALBUMS_TABLE,
    Album,
    ContactSheet,
    Resized,
    ResizeImage,
    SheetReady,
    contact_sheet,
    resize_image,
    sheet_ready,
)
from taskhop.backends.dynamodb import DynamoStore
from taskhop.backends.sqs import SqsQueue
from taskhop.sdk import Change, Event, F, JobContext, create_app, define_table

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


app.event(sheet_ready)


@app.on(sheet_ready)
def announce(event: Event[SheetReady], ctx: JobContext) -> str:
    return f"{event.payload['images']} images ready in {event.payload['workflow']}"


albums = define_table(ALBUMS_TABLE, item=Album, key="pk")


@app.on_change(albums, on={"insert", "modify"}, where=F.title.exists(), changed=("photos",))
def on_album(change: Change[Album], ctx: JobContext) -> int:
    assert change.new is not None
    return change.new["photos"]
