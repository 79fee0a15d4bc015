import easytransfer.cli.allocator as allocator


def test_the_cli_reexecutes_itself_under_jemalloc_once(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "jemalloc_path", lambda: "/usr/lib/libjemalloc.so.2")
    monkeypatch.setattr(allocator, "using_jemalloc", lambda: False)
    monkeypatch.setattr(allocator.os, "execve", lambda exe, args, env: calls.append((exe, args, env)))
    monkeypatch.delenv("EASYTRANSFER_ALLOCATOR", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/other.so")
    allocator.reexec_with_jemalloc(["demo", "--limit", "5"])
    (exe, args, env), = calls
    assert args[1:] == ["-m", "easytransfer.cli", "demo", "--limit", "5"]
    assert env["LD_PRELOAD"] == "/usr/lib/libjemalloc.so.2:/other.so"
    assert env["MALLOC_CONF"] == allocator.JEMALLOC_CONF and env["EASYTRANSFER_ALLOCATOR"] == "system"
    monkeypatch.setenv("EASYTRANSFER_ALLOCATOR", "system")  # what the child sees: no second exec
    allocator.reexec_with_jemalloc(["demo"])
    assert len(calls) == 1


def test_no_reexec_without_jemalloc(monkeypatch):
    monkeypatch.setattr(allocator, "jemalloc_path", lambda: None)
    monkeypatch.setattr(allocator.os, "execve", lambda *a: (_ for _ in ()).throw(AssertionError("exec")))
    allocator.reexec_with_jemalloc(["demo"])
