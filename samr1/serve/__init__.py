"""samr1's HTTP service: SAM / policy segmentation and the reward as a service (``samr1 serve``).

``create_app(engine, reward=..., segmenter=...)`` builds the ASGI app (FastAPI; the ``[serve]`` extra),
:class:`ServerThread` runs it with uvicorn in a background thread, :mod:`samr1.serve.protocol` holds what a
client needs (content keys, upload encoding) without importing FastAPI. See :mod:`samr1.serve.app` for the
endpoints and :mod:`samr1.client` for the client.
"""

from __future__ import annotations

from samr1.serve.protocol import Limits, image_content_key, mask_content_key

__all__ = ["Limits", "image_content_key", "mask_content_key", "create_app", "ServerConfig", "SamR1Service",
           "ServerThread"]


def __getattr__(name: str):
    # the app and the runner import FastAPI/uvicorn: load them only when asked for
    if name in ("create_app", "ServerConfig", "SamR1Service"):
        from samr1.serve import app

        return getattr(app, name)
    if name == "ServerThread":
        from samr1.serve.runner import ServerThread

        return ServerThread
    raise AttributeError(f"module 'samr1.serve' has no attribute {name!r}")
