"""What the tabs share: settings, the signed-in user's role, and services created on first use
(nothing heavy happens at import or build time)."""

from __future__ import annotations

import threading
from functools import cached_property

import gradio as gr

from spatial.jobs import Actor, JobManager
from spatial.settings import AppSettings

from .auth import user_name


class AppContext:
    def __init__(self, settings: AppSettings):
        self.settings = settings
        self._lock = threading.Lock()

    def actor(self, profile: gr.OAuthProfile | None) -> Actor:
        name = user_name(profile)
        return Actor(name, self.settings.is_admin(name))

    @cached_property
    def jobs(self) -> JobManager:
        with self._lock:
            return JobManager(self.settings.data_dir / "jobs")
