"""Who is using the app: Sign in with Hugging Face on a Space, a local stand-in elsewhere.

Off a Space, Gradio's `gr.LoginButton` signs in through mocked routes that look up the machine's
Hugging Face token online, which fails offline. We replace only that lookup, so the same button,
the same session cookie and the same `gr.OAuthProfile` arguments work locally, as the configured
local user, with no network.
"""

from __future__ import annotations

import sys
import time
import warnings

import gradio as gr

from spatial.settings import AppSettings


def enable_local_login(settings: AppSettings) -> None:
    if settings.on_space:
        return
    import gradio.oauth as oauth

    user = settings.local_user
    if not settings.admin_names():
        where = "with a public share link" if settings.share else f"on {settings.server_name}, not loopback"
        print(f"spatial studio: serving {where}: the local sign-in gives no admin rights (anyone reaching the "
              "server could click it). Set SPATIAL_REMOTE_ADMIN=1 to trust it.",
              file=sys.stderr)  # fmt: skip

    def local_oauth_info() -> dict:
        now = int(time.time())
        return {
            "access_token": "local-login-no-token",
            "token_type": "bearer",
            "expires_in": 8 * 3600,
            "id_token": "local",
            "scope": "openid profile",
            "expires_at": now + 8 * 3600,
            "userinfo": {
                "sub": f"local-{user}",
                "name": user,
                "preferred_username": user,
                "profile": "",
                "picture": "",
                "website": "",
                "aud": "local",
                "auth_time": now,
                "nonce": "local",
                "iat": now,
                "exp": now + 8 * 3600,
                "iss": "local",
            },
        }

    oauth._get_mocked_oauth_info = local_oauth_info
    warnings.filterwarnings("ignore", message="Gradio does not support OAuth features outside of a Space")


def user_name(profile: gr.OAuthProfile | None) -> str | None:
    """The signed-in user's Hugging Face name, or None when nobody is signed in."""
    if profile is None:
        return None
    return getattr(profile, "username", None) or profile.get("preferred_username")
