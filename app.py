"""Spatial Studio: the Space's entry point (`python app.py`). It only assembles; see ui/ and spatial/."""

import sys

import torch

from spatial.jobs import JobError
from spatial.settings import AppSettings, cpu_threads, work_from_repo_root
from ui import QUEUE_SIZE, AppContext, build_app, launch_kwargs

work_from_repo_root()  # relative paths mean the same here and in training jobs
settings = AppSettings.from_env()
if (threads := cpu_threads(settings.preset)) is not None:
    torch.set_num_threads(threads)
context = AppContext(settings)
try:
    context.jobs  # claim this data dir's job scheduler before anything else touches the folder
except JobError as e:  # another app runs on it: say so and stop
    sys.exit(f"Spatial Studio did not start: {e}")
demo = build_app(settings, context)

if __name__ == "__main__":
    context.start()
    # api_open=False: requests to the REST routes wait in the queue like the page's own, so the
    # per-event limits (one render at a time on the one pipeline) hold for API callers too.
    demo.queue(default_concurrency_limit=None, max_size=QUEUE_SIZE, api_open=False).launch(**launch_kwargs(settings))
