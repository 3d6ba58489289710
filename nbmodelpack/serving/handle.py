"""A running server as the notebook sees it: URL, ``curl`` line, ``predict``, a try-it widget.

The widget offers sample images only when the caller gives them (``srv.samples``);
no library path reads demo data on its own. It follows its server: when the
server stops (``srv.stop()``, ``%modelpack stop``, the sidebar, a crash) it says
"stopped" and its buttons turn off; a prediction sent to a stopped server is one
line saying so.
"""

from __future__ import annotations

import contextlib
import functools
import html
import io
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ..errors import ServingError
from .registry import ServerEntry, alive, servers, stop
from .runner import curl_line

_WATCH_EVERY = 1.0  # seconds between checks that a widget's server still runs


class Server:
    """A background server started by :func:`nbmodelpack.serve`.

    Example:
        >>> srv = nbmodelpack.serve("mnist-mlp:latest")  # doctest: +SKIP
        >>> srv.predict(png_bytes)["prediction"]  # doctest: +SKIP
        '7'
        >>> srv.stop()  # doctest: +SKIP
    """

    def __init__(self, entry: ServerEntry, *, token: str | None = None) -> None:
        self.entry = entry
        self.url = entry.url
        self.ref = entry.ref
        self.pid = entry.pid
        self._token = token
        # (images, labels) the widget offers as samples, e.g. ``srv.samples = mnist()``; none by default.
        self.samples: tuple[Any, Any] | None = None
        self._on_stop: list[Callable[[], None]] = []
        self._stopped = threading.Event()

    @property
    def running(self) -> bool:
        """Whether the server process still runs and is registered (it stops from anywhere: here, a terminal, the sidebar).

        Example:
            >>> srv.running  # doctest: +SKIP
            True
        """
        if self._stopped.is_set():
            return False
        if alive(self.pid) and any(s.pid == self.pid for s in servers()):
            return True
        self._mark_stopped()
        return False

    def _mark_stopped(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        for callback in self._on_stop:
            with contextlib.suppress(Exception):  # a closed widget must not break stop()
                callback()

    def _gone(self) -> ServingError:
        return ServingError(f"the server for {self.ref} has stopped", hint=f"start it again with nbmodelpack.serve({self.ref!r})")

    @property
    def curl(self) -> str:
        """A ready-to-paste ``curl`` command that posts ``digit.png`` to ``/predict``."""
        return curl_line(self.entry)

    def predict(self, data: Any, *, timeout: float = 30.0) -> dict[str, Any]:
        """POST to ``/predict``: image bytes (PNG/JPEG), a PIL image, or a nested list / array."""
        if hasattr(data, "save"):  # a PIL image
            buf = io.BytesIO()
            data.save(buf, format="PNG")
            data = buf.getvalue()
        if isinstance(data, bytes | bytearray):
            body, ctype = bytes(data), "image/png"
        else:
            body, ctype = json.dumps({"input": data.tolist() if hasattr(data, "tolist") else data}).encode(), "application/json"
        headers = {"Content-Type": ctype}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if not self.running:
            raise self._gone()
        req = urllib.request.Request(self.url + "/predict", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - our own server's URL
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise ServingError(f"{exc.code}: {message}") from None
        except OSError as exc:
            if not self.running:
                raise self._gone() from None
            reason = getattr(exc, "reason", exc)
            raise ServingError(f"cannot reach {self.url}: {getattr(reason, 'strerror', None) or reason}") from None

    def stop(self) -> None:
        """Stop this server (its widget then says "stopped")."""
        try:
            stop(str(self.pid))
        finally:
            if not alive(self.pid):
                self._mark_stopped()

    def __str__(self) -> str:
        return f"serving {self.ref} at {self.url} (pid {self.pid})\ntry it:\n  {self.curl}"

    def __repr__(self) -> str:
        return f"<Server {self.ref} at {self.url} pid={self.pid}>"

    def to_json(self) -> dict[str, Any]:
        return {**self.entry.to_json(), "curl": self.curl}

    def _repr_html_(self) -> str:
        return (
            f"<div><b>serving</b> <code>{html.escape(self.ref)}</code> at "
            f"<a href='{html.escape(self.url)}/v2' target='_blank'>{html.escape(self.url)}</a> (pid {self.pid})"
            f"<pre style='margin:4px 0'>{html.escape(self.curl)}</pre></div>"
        )

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        try:
            shown = self.widget(self.samples)  # says serving / stopped as the server does
        except ImportError:
            shown = HTML(self._repr_html_())
        display(shown)

    def widget(self, samples: tuple[Any, Any] | None = None) -> Any:
        """Upload an image, or pick one of ``samples`` (``uint8`` images and their labels) → the server's prediction.

        Example:
            >>> srv.widget(samples=mnist())  # doctest: +SKIP
        """
        import ipywidgets as w

        out = w.Output()
        upload = w.FileUpload(accept="image/*", multiple=False, description="Upload image")
        status = w.HTML(value=self._status_html())
        controls: list[Any] = [upload]

        def show(png: bytes, caption: str) -> None:
            out.clear_output()
            with out:
                from IPython.display import Image, display

                try:
                    result = self.predict(png)
                    text = f"{caption}: prediction <b>{html.escape(str(result.get('prediction')))}</b>"
                except ServingError as exc:
                    text = f"{caption}: <span style='color:#b00'>{html.escape(str(exc))}</span>"
                display(Image(data=png, width=84))
                display(w.HTML(text))

        def on_upload(change: dict[str, Any]) -> None:
            files = change["new"]
            if files:
                item = files[0]
                show(bytes(item["content"]), str(item.get("name", "upload")))

        upload.observe(on_upload, names="value")
        rows: list[Any] = [upload]
        if samples is not None:
            images, labels = samples
            index = w.BoundedIntText(value=0, min=0, max=len(images) - 1, description="Test sample", layout=w.Layout(width="180px"))
            button = w.Button(description="Predict sample")
            button.on_click(lambda _: show(_png(images[index.value]), f"sample {index.value} (true label {int(labels[index.value])})"))
            rows.append(w.HBox([index, button]))
            controls.append(button)

        def stopped() -> None:
            status.value = self._status_html()
            for control in controls:
                control.disabled = True

        self._on_stop.append(stopped)
        self._watch()
        curl = w.HTML(value=f"<pre style='margin:2px 0'>{html.escape(self.curl)}</pre>")
        return w.VBox([status, curl, w.HBox(rows), out])

    def _status_html(self) -> str:
        if self._stopped.is_set():
            return f"<span style='color:#b00'><b>stopped</b></span> <code>{html.escape(self.ref)}</code> (was {html.escape(self.url)})"
        return f"<b>serving</b> <code>{html.escape(self.ref)}</code> at {html.escape(self.url)}"

    def _watch(self) -> None:
        """Notice a stop made elsewhere (a terminal, the sidebar, a crash): poll until the server is gone."""

        def watch() -> None:
            while not self._stopped.wait(_WATCH_EVERY):
                if not self.running:
                    return

        threading.Thread(target=watch, daemon=True, name=f"modelpack-watch-{self.pid}").start()


def _png(image: Any) -> bytes:
    """A ``[1, 28, 28]`` or ``[28, 28]`` uint8 tensor/array → PNG bytes."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image, dtype=np.uint8)
    arr = arr.reshape(arr.shape[-2:])
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return buf.getvalue()


@functools.cache
def _mnist() -> tuple[Any, Any]:
    """The MNIST test split, read (MD5-checked, inflated) once per process."""
    from ..pytorch.data import mnist

    return mnist()


def mnist_png(index: int) -> tuple[bytes, int]:
    """The MNIST test image ``index`` as PNG bytes, and its label (for demos and tests; read only when called).

    Example:
        >>> png, label = mnist_png(0)  # doctest: +SKIP
    """
    images, labels = _mnist()
    return _png(images[index]), int(labels[index])
