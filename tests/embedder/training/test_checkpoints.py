import json

import pytest

from embedder.training.checkpoints import BACKUP_METADATA, resume_epoch


def test_resume_epoch_reads_the_backups_metadata(tmp_path):
    assert resume_epoch(tmp_path) is None  # no backup: nothing to resume
    (tmp_path / BACKUP_METADATA).write_text(json.dumps({"epoch": 3, "batch": 0}))
    assert resume_epoch(tmp_path) == 3


@pytest.mark.parametrize(("text", "problem"), [
    ("not json", "not JSON: Expecting value"),
    ("\udcff", "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: "
                "invalid start byte"),
    ("[3]", 'expected {"epoch": N >= 0, ...}, got [3]'),
    ('{"epoch": -1}', "expected {\"epoch\": N >= 0, ...}, got {'epoch': -1}"),
    ('{"epoch": true}', "expected {\"epoch\": N >= 0, ...}, got {'epoch': True}"),
    ('{"epoch": 2.5}', "expected {\"epoch\": N >= 0, ...}, got {'epoch': 2.5}"),
    ('{"batch": 1}', "expected {\"epoch\": N >= 0, ...}, got {'batch': 1}"),
])
def test_resume_epoch_refuses_damaged_metadata_naming_the_folder(tmp_path, text, problem):
    # Keras would fail with the parser's text, or resume at a nonsense epoch
    (tmp_path / BACKUP_METADATA).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValueError) as info:
        resume_epoch(tmp_path)
    assert str(info.value) == (
        f"checkpoint_dir {str(tmp_path)!r} cannot be resumed: its training_metadata.json is "
        f"damaged ({problem}); delete the folder to train from the first epoch")


def test_damaged_backup_message_fits_the_limit_whatever_the_folder(tmp_path):
    from embedder.training.checkpoints import WEIGHTS, _damaged

    # HDF5's text is cut to the room the folder's name leaves (at least 40 characters)
    problem = "Unable to synchronously open file (truncated file: eof = 8172) " * 20
    short = str(_damaged(tmp_path / "ck", WEIGHTS, problem))
    assert len(short) == 300 and repr(str(tmp_path / "ck")) in short
    assert short.endswith(" more characters)); delete the folder to train from the first epoch")
    deep = tmp_path / ("deep" * 60) / "ck"
    long = str(_damaged(deep, WEIGHTS, problem))
    assert repr(str(deep)) in long  # named whole, even past the limit
    assert len(long.split("is damaged (", 1)[1].rsplit("); delete", 1)[0]) == 40
