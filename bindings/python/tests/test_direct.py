"""The repository's hot calls (save, save_many, get, delete) cross as one direct
call each: answers bigger than the thread's buffer, errors, and threads."""

import threading

import pytest

import datasync


def test_an_entity_bigger_than_the_answer_buffer_round_trips(ds):
    notes = ds.repo("Note")
    body = "x" * (3 * datasync._ANSWER)
    uid = notes.save({"body": body})
    got = notes.get(uid)
    assert got["body"] == body and got["id"] == uid
    assert notes.get(uid)["body"] == body, "a second read after the waiting answer was taken"


def test_ids_of_a_batch_bigger_than_the_answer_buffer_come_back_whole(ds):
    notes = ds.repo("Note")
    ids = notes.save_many({"n": i} for i in range(5000))
    assert len(ids) == 5000 and len(set(ids)) == 5000
    assert len(",".join(ids)) > datasync._ANSWER, "the ids must not fit the buffer for this test"
    assert [notes.get(uid)["n"] for uid in ids[:: 499]] == list(range(0, 5000, 499))


def test_errors_come_back_as_the_library_errors_and_save_nothing(ds):
    notes = ds.repo("Note")
    with pytest.raises(datasync.InvalidEntity):
        notes.save({"version": "seven"})
    with pytest.raises(datasync.InvalidEntity):
        notes.save_many([{"n": 1}, {"version": "seven"}])
    with pytest.raises(datasync.InvalidId):
        notes.get("no separator")
    with pytest.raises(datasync.InvalidId):
        notes.delete("")
    with pytest.raises(datasync.InvalidId):
        notes.get("Note.\ud800")
    with pytest.raises(TypeError):
        notes.get(7)
    with pytest.raises(TypeError):
        notes.save({"when": object()})
    assert notes.all() == []
    # The error slot is per call: a good call after a bad one answers normally.
    assert notes.get(notes.save({"n": 2}))["n"] == 2


def test_a_closed_instance_refuses_direct_calls(ds):
    notes = ds.repo("Note")
    uid = notes.save({"n": 1})
    ds.close()
    with pytest.raises(datasync.Closed):
        notes.save({"n": 2})
    with pytest.raises(datasync.Closed):
        notes.get(uid)


def test_threads_get_their_own_answers(ds):
    notes = ds.repo("Note")
    failures = []

    def work(t: int) -> None:
        try:
            for i in range(300):
                uid = notes.save({"t": t, "i": i, "pad": "p" * (i * 300)})
                got = notes.get(uid)
                if got is None or (got["t"], got["i"]) != (t, i):
                    failures.append((t, i, got and (got["t"], got["i"])))
                if i % 50 == 0:
                    with pytest.raises(datasync.InvalidId):
                        notes.get("bad")
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []
    assert len(notes.all()) == 1200


def test_the_handle_is_released_once_with_its_repository(ds, monkeypatch):
    import gc

    released = []
    real = datasync._direct_release

    def counting(handle):
        released.append(handle)
        real(handle)

    monkeypatch.setattr(datasync, "_direct_release", counting)
    notes = ds.repo("Note")
    handle = notes._direct
    notes.save({"n": 1})
    del notes
    gc.collect()
    assert released == [handle]
    # The instance still serves a new repository of that name, with its own handle.
    again = ds.repo("Note")
    assert len(again.all()) == 1 and again._direct != 0
