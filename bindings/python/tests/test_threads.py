import threading

import datasync


def test_many_python_threads_at_once(ds):
    users = ds.repo("User")
    counts = []
    users.observe_all(lambda rows: counts.append(len(rows)))
    errors = []

    def worker(n):
        try:
            for i in range(25):
                uid = users.save({"worker": n, "i": i})
                assert users.get(uid)["i"] == i
                users.query(where={"worker": n})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ds.drain_events()
    assert len(users.all()) == 150
    assert counts[-1] == 150
    for n in range(6):
        assert sorted(r["i"] for r in users.query(where={"worker": n})) == list(range(25))
