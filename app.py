"""Spatial Studio: the Space's entry point (`python app.py`). It only assembles; see ui/ and spatial/."""

from spatial.settings import AppSettings
from ui import AppContext, build_app, launch_kwargs

settings = AppSettings.from_env()
context = AppContext(settings)
demo = build_app(settings, context)

if __name__ == "__main__":
    context.start()
    demo.queue(default_concurrency_limit=None).launch(**launch_kwargs(settings))
