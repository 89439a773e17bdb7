"""How many CPU threads the app gives torch (docs/BENCHMARKS.md: one thread renders the toy 2.6x faster)."""

import pytest

from spatial.settings import cpu_threads


def test_the_toy_on_a_cpu_runs_on_one_thread():
    assert cpu_threads("toy", env={}, cuda=False) == 1


def test_full_size_models_and_gpu_machines_keep_torchs_default():
    assert cpu_threads("flux-dev", env={}, cuda=False) is None
    assert cpu_threads("toy", env={}, cuda=True) is None


def test_the_setting_overrides_the_default():
    assert cpu_threads("toy", env={"SPATIAL_CPU_THREADS": "2"}, cuda=False) == 2
    assert cpu_threads("flux-dev", env={"SPATIAL_CPU_THREADS": "0"}, cuda=True) == 1


def test_a_setting_that_is_not_a_number_is_refused_with_its_name():
    with pytest.raises(ValueError, match="SPATIAL_CPU_THREADS"):
        cpu_threads("toy", env={"SPATIAL_CPU_THREADS": "many"}, cuda=False)
