"""The option registry (run/config.OPTIONS) is where every option of a run is defined: the CLI's flags, the nightly
config's names, the recorded label options and the manifest's options all come from it, and docs/cli.md is generated
from the CLI. No Ray."""

from emonet_batch.cli import cli
from emonet_batch.devtools.cli_reference import REFERENCE, reference
from emonet_batch.ops.nightly import FLAG_NAMES
from emonet_batch.run.config import OPTIONS, command_options, from_flags, label_flags, score_config


def test_the_generated_reference_is_up_to_date():
    import difflib

    written, generated = REFERENCE.read_text(encoding="utf-8"), reference()
    stale = "\n".join(difflib.unified_diff(written.splitlines(), generated.splitlines(), lineterm="", n=1))
    assert not stale, f"docs/cli.md is stale: run python -m emonet_batch.devtools.cli_reference\n{stale[:2000]}"


def test_each_command_has_the_flags_of_its_options_and_no_other():
    for command in ("score", "rescore"):
        flags = {opt for param in cli.commands[command].params for opt in param.opts if opt.startswith("--")}
        assert flags == {option.flag for option in command_options(command)}, command
    assert FLAG_NAMES == {o.flag_name for o in command_options("score") if not o.required}


def test_a_required_option_left_out_is_one_line_here_and_before_a_job_is_submitted(capsys):
    from emonet_batch.cli import main

    for command, args, missing in (
        ("score", ["x.tar", "--output", "o"], "Missing option '--model'."),
        ("rescore", ["source", "--model", "m"], "Missing option '--output'."),
        ("score", ["--output", "o", "--model", "m"], "Missing argument 'INPUT...'."),
    ):
        assert main([command, *args]) == 2
        assert capsys.readouterr().err == f"emonet-batch: error: {missing}\n"
        # parsed before the cluster (none at this address) is asked
        assert main(["submit", "--address", "http://127.0.0.1:9", "--", command, *args]) == 2
        assert capsys.readouterr().err == f"emonet-batch: error: the job's command line: {missing}\n"
    assert main(["submit", "--", "score", "x.tar", "--output", "o", "--model", "m", "--batch-size", "0"]) == 2
    assert "the job's command line: Invalid value for '--batch-size'" in capsys.readouterr().err
    assert main(["submit", "--entrypoint-num-cpus", "-1", "--", "score", "x.tar", "--output", "o", "--model", "m"]) == 2
    capsys.readouterr()
    assert main(["submit", "--working-dir", "nowhere", "--", "score", "x.tar", "--output", "o", "--model", "m"]) == 2
    assert "--working-dir nowhere is not here (a local folder or .zip is uploaded from here)" in capsys.readouterr().err


def test_flags_become_a_config_with_each_value_in_its_group():
    options = from_flags(
        {"no_stats": True, "meta_fields": "age, gender", "decode_batch_size": 8, "endpoint_url": "http://s3:9000"}
    )
    config = score_config(["x.tar"], "out", "m", **options)
    assert not config.presentation.stats and config.presentation.report
    assert config.labels.meta_fields == ("age", "gender") and config.engine.decode_batch_size == 8
    assert config.storage.endpoint_url == "http://s3:9000"
    assert {o.name: o.default("rescore") for o in OPTIONS}["batch_size"] == 1024


def test_the_options_that_shape_labels_are_recorded_with_their_flags():
    assert label_flags() == {
        "centered": "--centered",
        "softmax": "--softmax",
        "embedding": "--embedding",
        "meta_fields": "--meta-fields",
        "key_column": "--key-column",
        "exact_decode": "--exact-decode",
    }
