"""The ``modelpack`` command: the verbs of :mod:`nbmodelpack.commands` for terminals and CI."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; print its result, or one ``error: …`` line and exit non-zero.

    Example:
        >>> main(["help", "tag"])  # doctest: +SKIP
    """
    from . import commands
    from .commands.render_text import render
    from .errors import ModelPackError, render_error
    from .extras import missing_extra
    from .serving import verbs  # noqa: F401 - registers serve, servers, stop, containerize

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = commands.run(args)
    except ModelPackError as exc:
        print(render_error(exc), file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        missing = missing_extra(exc)  # a verb that needs an extra the install lacks
        if missing is None:
            raise
        print(render_error(missing), file=sys.stderr)
        return missing.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    text = render(result, as_json="--json" in args)
    if text:
        print(text)
    if getattr(result, "ok", True) is False:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
