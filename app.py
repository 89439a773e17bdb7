"""Spatial Studio: the Space's entry point (`python app.py`). It only assembles; see ui/ and spatial/."""

import torch

from spatial.settings import AppSettings, cpu_threads, work_from_repo_root
from ui import QUEUE_SIZE, AppContext, build_app, launch_kwargs

work_from_repo_root()  # relative paths mean the same here and in training jobs
settings = AppSettings.from_env()
if (threads := cpu_threads(settings.preset)) is not None:
    torch.set_num_threads(threads)
context = AppContext(settings)
demo = build_app(settings, context)

if __name__ == "__main__":
    context.start()
    demo.queue(default_concurrency_limit=None, max_size=QUEUE_SIZE).launch(**launch_kwargs(settings))
