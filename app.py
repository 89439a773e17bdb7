"""Spatial Studio: the Space's entry point (`python app.py`). It only assembles; see ui/ and spatial/."""

from spatial.settings import AppSettings
from ui import build_app, launch_kwargs

settings = AppSettings.from_env()
demo = build_app(settings)

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=None).launch(**launch_kwargs(settings))
