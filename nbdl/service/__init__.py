"""nbdl's download service: a JSON API, a live event stream and a page, over the same engine.

Start it with ``nbdl serve`` or, on a running event loop, ``server = await nbdl.serve(...)``;
``server.url`` opens the page.  See the README section "Web service".
"""

from ._app import Server, serve

__all__ = ["Server", "serve"]
