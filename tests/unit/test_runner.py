import threading

from gpuk8s.runner import for_each_host


def test_every_host_finishes_and_errors_are_collected():
    seen = []

    def work(h):
        if h == "b":
            raise RuntimeError("boom")
        return h.upper()

    res = for_each_host(["a", "b", "c"], work, name=lambda h: h, parallel=2,
                        on_done=lambda o: seen.append(o.name))
    assert list(res) == ["a", "b", "c"]
    assert res["a"].value == "A" and res["c"].value == "C"
    assert not res["b"].ok and str(res["b"].error) == "boom"
    assert sorted(seen) == ["a", "b", "c"]


def test_parallelism_is_bounded():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    gate = threading.Barrier(3, timeout=5)

    def work(h):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        if h < 3:
            gate.wait()  # the first three must run together
        with lock:
            state["now"] -= 1

    for_each_host(list(range(9)), work, name=str, parallel=3)
    assert state["max"] == 3


def test_empty_host_list():
    assert for_each_host([], lambda h: h, name=str) == {}
