"""The app works from the repo root, like its training jobs, without changing what a path setting means."""

import os

from spatial.settings import REPO_ROOT, work_from_repo_root


def test_the_app_works_from_the_repo_root_where_jobs_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work_from_repo_root({})
    assert os.getcwd() == str(REPO_ROOT)


def test_a_relative_path_setting_keeps_pointing_where_it_did_from_the_launch_directory(tmp_path, monkeypatch):
    (tmp_path / "my-lora").mkdir()
    monkeypatch.chdir(tmp_path)
    env = {"SPATIAL_LORA": "my-lora", "SPATIAL_BASE_MODEL": "owner/flux", "SPATIAL_DATA_DIR": "not-yet-made"}
    work_from_repo_root(env)
    assert env["SPATIAL_LORA"] == str(tmp_path / "my-lora")
    assert env["SPATIAL_BASE_MODEL"] == "owner/flux"  # a Hub id (nothing local of that name) is left alone
    assert env["SPATIAL_DATA_DIR"] == str(tmp_path / "not-yet-made")  # always a folder here, made later
