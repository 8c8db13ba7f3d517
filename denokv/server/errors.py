"""An HTTP error with the exact plain-text body the client is shown."""

from __future__ import annotations


class HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def bad_request(text: str) -> HttpError:
    return HttpError(400, text)
