"""The demo's contracts: types only, so the producer imports nothing but the standard library."""

from __future__ import annotations

from typing import TypedDict

from taskhop.static_contracts import static_contract, static_event


class ResizeImage(TypedDict):
    url: str
    width: int
    flaky: bool  # the demo worker fails the first attempt of these
    broken: bool  # ... and every attempt of these


class Resized(TypedDict):
    key: str
    width: int


resize_image = static_contract(
    "resize-image",
    input=ResizeImage,
    output=Resized,
    retry={"attempts": 3, "delay": 0.2, "jitter": False},
    timeout="10s",
)


class ContactSheet(TypedDict):
    images: int
    keys: list[str]


contact_sheet = static_contract(
    "contact-sheet",
    input=list[Resized],
    output=ContactSheet,
    retry={"attempts": 3, "delay": 0.2, "jitter": False},
    timeout="10s",
)
"""A chord's callback: runs once, after every resize of the sheet, with their outputs in order."""


class SheetReady(TypedDict):
    workflow: str
    images: int


sheet_ready = static_event("sheet.ready", payload=SheetReady, key="workflow")
"""Emitted once a contact sheet is built; the worker's ``announce`` subscriber runs once."""


class Album(TypedDict):
    pk: str
    title: str
    photos: int


ALBUMS_TABLE = "demo-albums"
"""The user's own table whose changes the worker's ``on_album`` trigger reacts to."""
