from emonet_batch.postprocess import packaged_neutral_means
from emonet_batch.taxonomy import (
    DIMENSION_COLUMNS,
    DIMENSIONS,
    EMOTION_COLUMNS,
    EMOTIONS,
    FAMILIES,
    HEAD_COLUMNS,
    canonical_label,
    column_name,
    family_of,
    head_file_name,
    head_file_stem,
    is_emotion,
    label_of,
)


def test_forty_emotions_in_official_order():
    assert len(EMOTIONS) == 40
    assert EMOTIONS[:5] == ("Amusement", "Elation", "Pleasure/Ecstasy", "Contentment", "Thankfulness/Gratitude")
    assert EMOTIONS[13] == "Concentration"
    assert EMOTIONS[35] == "Helplessness"
    assert EMOTIONS[-1] == "Jealousy & Envy"


def test_families_partition_the_emotions():
    assert len(FAMILIES) == 7
    members = [label for group in FAMILIES.values() for label in group]
    assert sorted(members) == sorted(EMOTIONS)
    assert family_of("Amusement") == "Positive High-Energy Emotions"
    assert family_of("Hopelessness") == "Negative Low-Energy Emotions"


def test_dimensions():
    assert DIMENSIONS == ("Valence", "Arousal", "Dominance", "Emotional Vulnerability")
    assert DIMENSION_COLUMNS == ("valence", "arousal", "dominance", "emotional_vulnerability")
    assert HEAD_COLUMNS == EMOTION_COLUMNS + DIMENSION_COLUMNS
    assert len(set(HEAD_COLUMNS)) == 44
    assert is_emotion("amusement") and not is_emotion("valence")


def test_column_names():
    assert column_name("Jealousy & Envy") == "jealousy_envy"
    assert column_name("Pleasure/Ecstasy") == "pleasure_ecstasy"
    assert column_name("Impatience and Irritability") == "impatience_and_irritability"
    assert column_name("Intoxication/Altered States of Consciousness") == "intoxication_altered_states_of_consciousness"
    assert column_name("  Hope/Enthusiasm/Optimism ") == "hope_enthusiasm_optimism"
    assert label_of("jealousy_envy") == "Jealousy & Envy"


def test_head_file_stems_follow_the_release():
    assert head_file_stem("Jealousy & Envy") == "jealousy_&_envy"
    assert head_file_name("Pleasure/Ecstasy") == "model_pleasure_ecstasy_best.pth"
    assert head_file_name("Emotional Vulnerability") == "model_emotional_vulnerability_best.pth"


def test_aliases_and_canonical_labels():
    assert canonical_label("Hopelessness") == "Helplessness"
    assert canonical_label("hopelessness") == "Helplessness"
    assert canonical_label("jealousy_envy") == "Jealousy & Envy"


def test_neutral_means_cover_every_head():
    means = packaged_neutral_means()
    assert set(means) == set(HEAD_COLUMNS)
    assert abs(means["concentration"] - 4.073405725079424) < 1e-12
