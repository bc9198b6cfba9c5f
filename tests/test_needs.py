"""Need registry: built-in gain functions and user needs from YAML."""

import numpy as np
import pytest

from verl_flexrec.needs import ESCI_GAINS, Need, get_need, list_needs, load_needs_yaml, register_need

FEATURES = {
    "interest": np.array([1.0, 0.5, 2.0, 0.0]),
    "novel_topic": np.array([1.0, 0.0, 1.0, 1.0]),
    "popularity": np.array([0.25, 1.0, 0.0, 0.5]),
}


def test_builtin_needs_and_their_gains():
    assert {"maximize_interest", "explore_new_topics", "trend_promotion", "product_search"} <= set(list_needs())
    np.testing.assert_array_equal(get_need("maximize_interest").gain(FEATURES), FEATURES["interest"])
    np.testing.assert_array_equal(get_need("explore_new_topics").gain(FEATURES), [1.0, 0.0, 2.0, 0.0])
    np.testing.assert_array_equal(get_need("trend_promotion").gain(FEATURES), [0.25, 0.5, 0.0, 0.0])
    np.testing.assert_array_equal(get_need("trend_promotion").weight(FEATURES), FEATURES["popularity"])
    labels = ["E", "S", "C", "I"]
    esci = {"esci_gain": np.array([ESCI_GAINS[x] for x in labels])}
    np.testing.assert_array_equal(get_need("product_search").gain(esci), [1.0, 0.1, 0.01, 0.0])
    assert "popularity" in get_need("trend_promotion").side_info


def test_gain_is_base_times_weight_for_every_need():
    for name in ["maximize_interest", "explore_new_topics", "trend_promotion"]:
        need = get_need(name)
        np.testing.assert_allclose(need.gain(FEATURES), FEATURES[need.base] * need.weight(FEATURES))


def test_missing_feature_names_the_need_and_feature():
    with pytest.raises(KeyError, match="trend_promotion.*popularity"):
        get_need("trend_promotion").gain({"interest": [1.0]})
    with pytest.raises(KeyError, match="unknown need 'nope'"):
        get_need("nope")


def test_user_needs_from_yaml(tmp_path):
    path = tmp_path / "needs.yaml"
    path.write_text(
        "needs:\n"
        "  - name: hidden_gems\n"
        "    title: Hidden Gems\n"
        "    instruction: Rank first what I would love that few people watch.\n"
        "    weights: {novel_topic: 1.0, popularity: -0.5}\n"
        "    side_info: [title, category, popularity]\n"
    )
    (need,) = load_needs_yaml(path)
    assert get_need("hidden_gems") is need
    feats = {"interest": np.array([1.0, 1.0]), "novel_topic": np.array([1.0, 1.0]), "popularity": np.array([0.25, 1.0])}
    np.testing.assert_allclose(need.gain(feats), [2.0, 1.0])
    load_needs_yaml(path)  # same definition again: no error


@pytest.mark.parametrize(
    "body,message",
    [
        ("- name: x\n", "need #0: missing field 'instruction'"),
        ("- name: x\n  instruction: hi\n  colour: red\n", r"need #0: unknown field\(s\) \['colour'\]"),
        ("- name: x\n  instruction: hi\n  side_info: [smell]\n", "unknown side_info"),
        ("- name: bad name\n  instruction: hi\n", "snake_case"),
        ("name: x\n", "expected a list"),
        ("- [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_yaml_gets_one_clear_error_naming_file_and_entry(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message) as err:
        load_needs_yaml(path, register=False)
    assert "bad.yaml" in str(err.value)


def test_conflicting_registration_is_refused():
    need = Need(name="maximize_interest", title="x", instruction="something else")
    with pytest.raises(ValueError, match="already registered"):
        register_need(need)
