"""How many CPU threads the app gives torch (docs/BENCHMARKS.md, "Toy FLUX on the CPU")."""

import os

import pytest

from spatial.settings import cpu_threads

CORES = len(os.sched_getaffinity(0))


def test_the_toy_on_a_cpu_renders_on_two_threads_where_there_are_two_cores():
    assert cpu_threads("toy", env={}, cuda=False) == min(2, CORES)


def test_a_running_training_job_leaves_the_toy_one_thread():
    assert cpu_threads("toy", env={}, cuda=False, job_running=True) == 1


def test_passive_openmp_waiting_leaves_the_toy_one_thread():
    # a sleeping second thread wakes too late for the toy's small ops: slower than one thread
    assert cpu_threads("toy", env={"OMP_WAIT_POLICY": "passive"}, cuda=False) == 1


def test_full_size_models_and_gpu_machines_keep_torchs_default():
    assert cpu_threads("flux-dev", env={}, cuda=False) is None
    assert cpu_threads("toy", env={}, cuda=True) is None


def test_the_setting_overrides_the_default():
    assert cpu_threads("toy", env={"SPATIAL_CPU_THREADS": "3"}, cuda=False) == 3
    assert cpu_threads("toy", env={"SPATIAL_CPU_THREADS": "3"}, cuda=False, job_running=True) == 3
    assert cpu_threads("flux-dev", env={"SPATIAL_CPU_THREADS": "0"}, cuda=True) == 1


def test_a_setting_that_is_not_a_number_is_refused_with_its_name():
    with pytest.raises(ValueError, match="SPATIAL_CPU_THREADS"):
        cpu_threads("toy", env={"SPATIAL_CPU_THREADS": "many"}, cuda=False)
