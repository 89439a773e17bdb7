"""How many CPU threads the app gives torch (docs/BENCHMARKS.md: one thread renders the toy 2.6x faster)."""

from spatial.settings import cpu_threads


def test_the_toy_on_a_cpu_runs_on_one_thread():
    assert cpu_threads("toy", env={}, cuda=False) == 1


def test_full_size_models_and_gpu_machines_keep_torchs_default():
    assert cpu_threads("flux-dev", env={}, cuda=False) is None
    assert cpu_threads("toy", env={}, cuda=True) is None


def test_the_setting_overrides_the_default():
    assert cpu_threads("toy", env={"SPATIAL_CPU_THREADS": "2"}, cuda=False) == 2
    assert cpu_threads("flux-dev", env={"SPATIAL_CPU_THREADS": "0"}, cuda=True) == 1
