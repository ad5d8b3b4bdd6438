"""The commands' backend choice: XLA's GPU flags on GPU hosts, the user's own flags kept."""

from semrec_jax import backend


def test_gpu_flags_are_added_unless_the_user_set_them():
  flag = "--xla_gpu_enable_latency_hiding_scheduler=true"
  assert backend.with_gpu_flags("") == flag
  assert backend.with_gpu_flags("--xla_dump_to=/tmp/d") == f"--xla_dump_to=/tmp/d {flag}"
  mine = "--xla_gpu_enable_latency_hiding_scheduler=false --xla_dump_to=/tmp/d"
  assert backend.with_gpu_flags(mine) == mine


def test_choose_sets_them_on_a_gpu_host_only(monkeypatch, tmp_path):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  monkeypatch.setattr(backend, "_GPU_DEVICES", (str(tmp_path / "nvidia0"),))
  backend.choose()
  assert "latency_hiding" not in backend.os.environ["XLA_FLAGS"]
  (tmp_path / "nvidia0").write_text("")
  backend.choose()
  assert backend.os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=8 "
                                             "--xla_gpu_enable_latency_hiding_scheduler=true")
