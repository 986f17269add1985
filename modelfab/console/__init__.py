"""The web console: a browser UI over the registry (lineage, datasets, labeling, pipeline runs, reports).

:func:`modelfab.console.mount.mount_console` adds its JSON API (``/api/console/...``) and static files
(``/console``) to a FastAPI app; :func:`modelfab.console.mount.console_app` is a stand-alone app.
"""

from modelfab.console.mount import console_app, mount_console

__all__ = ["console_app", "mount_console"]
