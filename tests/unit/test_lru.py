from firstlight.domain.lru import Lru


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # read: "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2
    cache.put("a", 4)  # a new value for a kept key replaces it
    assert cache.get("a") == 4 and len(cache) == 2


def test_capacity_zero_keeps_nothing() -> None:
    cache: Lru[str, bytes] = Lru(0)
    cache.put("a", b"x")
    assert cache.get("a") is None and len(cache) == 0
